//! The rules parser on arbitrary text: never panics, every error has a
//! position inside the text, and accepted rules render to text that parses
//! to the same rules (render -> parse -> render is stable).
#![no_main]
use hotplugd::rules::parse::{compile, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let src = [Source {
        name: "f.rules".into(),
        text: text.into(),
    }];
    match compile(&src, &["log"]) {
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = text.split('\n').count().max(1);
            for e in &errors {
                assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
            }
        }
        Ok(rs) => {
            let once = rs.render_file(0);
            let src2 = [Source {
                name: "f.rules".into(),
                text: once.clone(),
            }];
            let rs2 = compile(&src2, &["log"]).expect("rendered rules parse");
            assert_eq!(rs2.len(), rs.len());
            assert_eq!(rs2.render_file(0), once);
        }
    }
});
