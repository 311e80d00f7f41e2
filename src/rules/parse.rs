//! Rule files → [`RuleSet`], or every mistake as a [`Diagnostic`].
//!
//! The language is udev's, read as udev 252 reads it (the README and
//! `docs/udev-rules-compat.md` document it in full): one rule per logical
//! line (a trailing `\` continues it; a `#` line is a comment wherever it
//! is), `KEY{attr} OP "value"` terms separated by whitespace or commas,
//! `\"` and `e"..."` escapes in values. Each diagnostic is `file:line:column:
//! message` with the line and a caret, in three classes: a line udev would
//! skip is skipped and the rest loads ([`RuleSet::errors`]); a construct
//! hotplugd cannot do as udev would refuses the set (`Err`); what udev
//! accepts with a note is a warning ([`RuleSet::warnings`]).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::glob::{self, GlobError};
use super::subst::{self, Template};
use super::{
    Action, AssignOp, Command, Diagnostic, Escape, Match, MatchKey, NodeKey, Rule, RuleSet, ACTIONS,
};
use crate::limits::{
    MAX_ACTIONS_PER_RULE, MAX_ARGS, MAX_MATCHES_PER_RULE, MAX_RULES, MAX_RULES_FILE, MAX_TAG_LEN,
    MAX_VALUE_LEN,
};
use crate::usb;

/// One rule file's name and text.
#[derive(Clone, Debug)]
pub struct Source {
    /// How diagnostics name it (the path as given).
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// The rules compiled in when no `--rules` is given: log every USB device
/// that is plugged in or out, through the `log` builtin.
pub const DEFAULT_RULES: &str = r#"# hotplugd's built-in default rules (used when no --rules is given):
# log every USB device plugged in or out. Replace them with your own files:
#   hotplugd run --rules /etc/hotplugd/rules.d
ACTION=="add|remove", SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", RUN{builtin}+="log"
"#;

/// Name used in diagnostics for [`DEFAULT_RULES`].
pub const DEFAULT_RULES_NAME: &str = "<default rules>";

/// Reads `paths` (rule files, or directories of `*.rules` files) and
/// compiles them. As udev lays rule directories out: the files of all
/// paths load in one order, sorted by file name (not by directory); a file
/// whose name an earlier path also has replaces it (`--rules
/// /lib/udev/rules.d --rules /etc/udev/rules.d`: `/etc` wins), and a
/// replacing symlink to `/dev/null` masks the name. `builtins` are the
/// names `RUN{builtin}` may use. On an error reading a file, or a construct
/// hotplugd refuses, nothing is returned but the diagnostics; lines udev
/// would skip are skipped ([`RuleSet::errors`]).
/// With `as_root` (the daemon's effective uid is 0: `sys::is_root`), each
/// file is also checked for trust on the descriptor it is read from (see
/// [`check_trust`], which reports what was found).
pub fn load(
    paths: &[PathBuf],
    builtins: &[&str],
    as_root: bool,
) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    let mut trust = as_root.then(Trust::default);
    for f in merged_rule_files(paths, &mut errors) {
        match read_source(&f, trust.as_mut()) {
            Ok(s) => sources.push(s),
            Err(d) => errors.push(d),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rs = compile(&sources, builtins)?;
    rs.trust_checked = trust.is_some();
    rs.read_trust = trust.map(|t| t.found).unwrap_or_default();
    check_programs(&mut rs);
    let order = |d: &Diagnostic| (rs.files.iter().position(|f| *f == d.file), d.line, d.col);
    let mut w = std::mem::take(&mut rs.warnings);
    w.sort_by_key(order);
    rs.warnings = w;
    Ok(rs)
}

/// The rule files of `paths` in load order: by file name, a later path's
/// file replacing an earlier one of the same name, masked names (a
/// symlink to `/dev/null`) left out.
fn merged_rule_files(paths: &[PathBuf], errors: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut chosen: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for path in paths {
        match rule_files(path) {
            Ok(files) => {
                for f in files {
                    let name = f.file_name().unwrap_or_default().to_os_string();
                    match chosen.iter_mut().find(|(n, _)| *n == name) {
                        Some(e) => e.1 = f,
                        None => chosen.push((name, f)),
                    }
                }
            }
            Err(d) => errors.push(d),
        }
    }
    chosen.sort_by(|a, b| a.0.cmp(&b.0));
    chosen
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| !masked(f))
        .collect()
}

/// A symlink to `/dev/null`: udev's way to mask a rule file of that name.
fn masked(f: &Path) -> bool {
    std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::canonicalize(f).is_ok_and(|r| r == Path::new("/dev/null"))
}

fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.display().to_string(),
        line: 0,
        col: 0,
        message,
        source: String::new(),
        warning: false,
    }
}

/// The rule files a `--rules` path names.
fn rule_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let meta =
        std::fs::metadata(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        if !meta.is_file() {
            // a FIFO or a device would block the loop, or never end
            return Err(file_error(
                path,
                "not a regular file or a directory (a FIFO or device would block the daemon)"
                    .into(),
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path)
        .map_err(|e| file_error(path, format!("cannot read directory: {e}")))?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| file_error(path, format!("cannot read directory: {e}")))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "rules") && (p.is_file() || masked(&p)) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one rule file. With `trust` (as root), the open descriptor and
/// the directories leading to it are checked, see [`check_trust`].
fn read_source(path: &Path, trust: Option<&mut Trust>) -> Result<Source, Diagnostic> {
    use std::io::Read;
    // O_NONBLOCK: a FIFO swapped in after the check must not block us
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(file_error(path, "not a regular file".into()));
    }
    if let Some(t) = trust {
        t.check_read(path, &meta);
    }
    // Read at most one byte over the limit, so a huge file is refused
    // without reading it all.
    let mut bytes = Vec::new();
    f.take(MAX_RULES_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if bytes.len() > MAX_RULES_FILE {
        return Err(file_error(
            path,
            format!("file is larger than the limit of {MAX_RULES_FILE} bytes (MAX_RULES_FILE)"),
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Source {
            name: path.display().to_string(),
            text,
        }),
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Diagnostic {
                file: path.display().to_string(),
                line,
                col: 1,
                message: "not UTF-8 text (rule files must be UTF-8)".into(),
                source: String::new(),
                warning: false,
            })
        }
    }
}

/// Warns about `RUN` programs that do not exist or are not executable here
/// (a board's scripts may not exist on the machine that runs `check`).
fn check_programs(rs: &mut RuleSet) {
    use std::os::unix::fs::PermissionsExt;
    let mut warnings = Vec::new();
    for (ri, r) in rs.rules.iter().enumerate() {
        for a in &rs.actions[r.actions.clone()] {
            let Action::Run(c) = a else { continue };
            let Some(prog) = c.argv[0].literal() else {
                continue;
            };
            let prog = String::from_utf8_lossy(prog).into_owned();
            let problem = match std::fs::metadata(&prog) {
                Err(e) => Some(format!("RUN program {prog}: {e} (on this machine)")),
                Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => {
                    Some(format!("RUN program {prog} is not an executable file"))
                }
                Ok(_) => None,
            };
            if let Some(message) = problem {
                warnings.push(Diagnostic {
                    file: rs.files[rs.rules[ri].file].clone(),
                    line: r.line,
                    col: 1,
                    message,
                    source: String::new(),
                    warning: true,
                });
            }
        }
    }
    rs.warnings.extend(warnings);
}

/// What an untrusted user could change, for a daemon that runs as root.
///
/// The rule, checked on every load and reload:
/// - each rule file, judged by `fstat` on the descriptor it was read from
///   (so what is judged is what was read, even through a symlink or if the
///   path was swapped): a regular file owned by root, not writable by group
///   or others;
/// - every directory above it, from its real location (the path with every
///   symlink resolved, confirmed to name the inode that was read) up to `/`:
///   owned by root and not writable by group or others, unless the
///   directory has the sticky bit (like `/tmp`, mode 1777). In a sticky
///   directory only an entry's owner, the directory's owner or root may
///   rename or remove the entry (unlink(2), rename(2): EPERM), and the entry
///   we go through (the next directory, or the file) must itself be root's,
///   so no one else can replace it;
/// - when the path as given goes through symlinks: each symlink must be
///   root's (in a sticky directory its owner could replace it), and the
///   directories holding it, from their real location up to `/`, follow the
///   rule above. (A `..` inside a symlink's target is not followed
///   separately: only where it ends up is checked.)
/// - each `--rules` directory: as above, and not writable by others even
///   with the sticky bit, since any new `*.rules` file in it would load;
/// - each `RUN` program named by a literal path, and the directories above
///   it: as a rule file, but by path (it runs later; it is not read now).
///
/// Compared with others: OpenSSH's `StrictModes` (`safe_path()` in
/// misc.c) walks every directory of the real path up to `/` the same way
/// (root-owned, no group or other write) but has no sticky exception; sudo
/// checks the sudoers file itself (owner, no world write, group write only
/// for its own group) and not its directories; cron checks the crontab's
/// owner and mode only. hotplugd walks like OpenSSH and accepts a sticky
/// root-owned directory for the reason above.
///
/// Returns one error per path at fault, naming the file it leads to, the
/// path and the fix; nothing when [`load`] was not told we are root. The rule files
/// themselves were checked while [`load`] read them; this reports what was
/// found then, with the directories and programs.
pub fn check_trust(paths: &[PathBuf], rs: &RuleSet) -> Vec<Diagnostic> {
    if !rs.trust_checked {
        return Vec::new();
    }
    let mut t = Trust::default();
    // the rules directories first: the strict check names them best
    for p in paths.iter().filter(|p| p.is_dir()) {
        if let Some(problem) = untrusted(p, true) {
            t.report(real(p), p, "rules directory", &problem, p);
        }
        t.check_path_to(p);
    }
    for (at, d) in &rs.read_trust {
        if !t.found.iter().any(|(p, _)| p == at) {
            t.found.push((at.clone(), d.clone()));
        }
    }
    for r in &rs.rules {
        for a in &rs.actions[r.actions.clone()] {
            let Action::Run(c) = a else { continue };
            let Some(prog) = c.argv[0].literal() else {
                continue;
            };
            let prog = PathBuf::from(String::from_utf8_lossy(prog).into_owned());
            if !prog.exists() {
                continue; // a warning already says it is missing
            }
            if let Some(problem) = untrusted(&prog, false) {
                t.report(real(&prog), &prog, "RUN program", &problem, &prog);
            }
            t.check_path_to(&prog);
        }
    }
    t.found.into_iter().map(|(_, d)| d).collect()
}

/// `p` with its symlinks resolved, or `p` if that fails.
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The trust check's state, for one load: what was judged, what was found.
#[derive(Default)]
struct Trust {
    /// Real paths already judged, so each is checked and reported once.
    seen: Vec<PathBuf>,
    /// The real path at fault, and the report.
    found: Vec<(PathBuf, Diagnostic)>,
}

impl Trust {
    /// Reports `at` (once), as the problem of `file`.
    fn report(&mut self, at: PathBuf, file: &Path, what: &str, problem: &str, fix_at: &Path) {
        if self.found.iter().any(|(p, _)| *p == at) {
            return;
        }
        let fix = if problem.contains("owned by") && what.starts_with("symlink") {
            format!("`chown -h root {}`", fix_at.display())
        } else if problem.contains("owned by") {
            format!("`chown root {}`", fix_at.display())
        } else if problem.contains("writable by") {
            format!("`chmod go-w {}`", fix_at.display())
        } else {
            "look at it, then load again".to_string()
        };
        self.found.push((
            at,
            file_error(
                file,
                format!(
                    "{what} {problem}: anyone who can change it can make hotplugd run anything as root. Fix: {fix} (or pass --insecure-rules to accept the risk)"
                ),
            ),
        ));
    }

    /// The rule file read from `path`, as `fstat` on its descriptor saw it.
    fn check_read(&mut self, path: &Path, meta: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        let same = |r: &PathBuf| {
            std::fs::metadata(r).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
        };
        let Some(real) = std::fs::canonicalize(path).ok().filter(same) else {
            let at = path.to_path_buf();
            self.report(
                at,
                path,
                "rules file",
                "was replaced while it was read, so where it lies could not be checked (load again)",
                path,
            );
            return;
        };
        if let Some(problem) = problem(meta.uid(), meta.mode(), false, false) {
            let what = if real == path {
                "rules file".to_string()
            } else {
                format!("rules file (through a symlink: {})", real.display())
            };
            self.report(real.clone(), path, &what, &problem, &real);
        }
        if let Some(dir) = real.parent() {
            self.check_dirs(path, dir);
        }
        self.check_path_to(path);
    }

    /// The directories that lead to `file` as named: for each prefix of the
    /// path, the directory holding it (really, up to `/`), and the prefix
    /// itself if it is a symlink; then the real location of `file` and the
    /// directories above it.
    fn check_path_to(&mut self, file: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(abs) = std::path::absolute(file) else {
            return;
        };
        for prefix in abs.ancestors() {
            let Some(parent) = prefix.parent() else {
                break;
            };
            if let Ok(dir) = std::fs::canonicalize(parent) {
                self.check_dirs(file, &dir);
            }
            if let Ok(m) = std::fs::symlink_metadata(prefix) {
                if m.file_type().is_symlink() && m.uid() != 0 {
                    let what = format!("symlink {} on its path", prefix.display());
                    let problem = format!("is owned by uid {}, not root", m.uid());
                    self.report(prefix.to_path_buf(), file, &what, &problem, prefix);
                }
            }
        }
        if let Some(dir) = std::fs::canonicalize(file)
            .ok()
            .and_then(|r| r.parent().map(Path::to_path_buf))
        {
            self.check_dirs(file, &dir);
        }
    }

    /// `dir` (a real path) and every directory above it, up to `/`.
    fn check_dirs(&mut self, file: &Path, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        for d in dir.ancestors() {
            if self.seen.iter().any(|s| s == d) {
                return; // and so were the ones above it
            }
            self.seen.push(d.to_path_buf());
            let what = format!("directory {} above it", d.display());
            let problem = match std::fs::symlink_metadata(d) {
                Err(e) => Some(format!("cannot be checked: {e}")),
                Ok(m) if !m.is_dir() => Some("is no longer a directory (load again)".into()),
                Ok(m) => problem(m.uid(), m.mode(), true, false),
            };
            if let Some(problem) = problem {
                self.report(d.to_path_buf(), file, &what, &problem, d);
            }
        }
    }
}

/// Why `p` is not trustworthy, if it is not (following symlinks).
fn untrusted(p: &Path, strict_dir: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    problem(m.uid(), m.mode(), m.is_dir(), strict_dir)
}

/// Why a file or directory with this owner and mode is not trustworthy, if
/// it is not: owned by root and not writable by group or others, except a
/// directory with the sticky bit, unless `strict_dir` (a rules directory).
fn problem(uid: u32, mode: u32, is_dir: bool, strict_dir: bool) -> Option<String> {
    let mode = mode & 0o7777;
    if uid != 0 {
        return Some(format!("is owned by uid {uid}, not root"));
    }
    let sticky_dir = is_dir && mode & 0o1000 != 0 && !strict_dir;
    if mode & 0o022 != 0 && !sticky_dir {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        let sticky = if is_dir && !strict_dir && mode & 0o002 != 0 && mode & 0o1000 == 0 {
            ", without the sticky bit"
        } else {
            ""
        };
        return Some(format!("is writable by {who} (mode {mode:04o}){sticky}"));
    }
    None
}

/// A logical line: its text and where each piece came from.
struct Logical {
    text: String,
    /// (offset in `text`, 1-based physical line, that line's text)
    segments: Vec<(usize, usize, String)>,
}

impl Logical {
    /// The first physical line of the rule.
    fn first_line(&self) -> usize {
        self.segments[0].1
    }

    fn diag(&self, file: &str, offset: usize, message: String) -> Diagnostic {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.0 <= offset)
            .unwrap_or(&self.segments[0]);
        let in_line = offset - seg.0;
        let col = seg.2.get(..in_line).map_or(in_line, |p| p.chars().count()) + 1;
        Diagnostic {
            file: file.to_string(),
            line: seg.1,
            col,
            message,
            source: seg.2.clone(),
            warning: false,
        }
    }
}

fn logical_lines(text: &str) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut cur: Option<Logical> = None;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        // udev skips a `#` line wherever it is, even inside a continuation
        // and even when it ends in `\`: a comment never swallows a rule.
        if raw.trim_start().starts_with('#') {
            continue;
        }
        let (content, cont) = match raw.strip_suffix('\\') {
            Some(c) => (c, true),
            None => (raw, false),
        };
        let l = cur.get_or_insert_with(|| Logical {
            text: String::new(),
            segments: Vec::new(),
        });
        if l.text.is_empty() && !cont {
            let t = content.trim_start();
            if t.is_empty() || t.starts_with('#') {
                cur = None;
                continue;
            }
        }
        l.segments.push((l.text.len(), line_no, raw.to_string()));
        l.text.push_str(content);
        if !cont {
            out.extend(cur.take());
        }
    }
    out.extend(cur.take());
    out.retain(|l| !l.text.trim().is_empty());
    out
}

/// One `KEY{attr} OP "value"` term with byte offsets into the logical line.
struct Term<'a> {
    key: &'a str,
    key_at: usize,
    attr: Option<&'a str>,
    attr_at: usize,
    op: &'a str,
    op_at: usize,
    /// The value with udev's escapes undone (`\"` is `"`; in `e"..."`
    /// C escapes too).
    value: String,
    value_at: usize,
}

/// A logical line's terms, and what was lenient about them: udev separates
/// terms by whitespace and commas alike, so a missing or doubled comma is
/// only a warning (offset, message).
struct Lexed<'a> {
    terms: Vec<Term<'a>>,
    notes: Vec<(usize, String)>,
}

fn lex(text: &str) -> Result<Lexed<'_>, (usize, String)> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut terms: Vec<Term<'_>> = Vec::new();
    let mut notes = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        // separators: whitespace and commas, as udev reads them
        let sep_at = i;
        let mut commas = 0;
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            commas += usize::from(b[i] == b',');
            i += 1;
        }
        if i >= b.len() {
            return Ok(Lexed { terms, notes }); // a trailing comma is harmless
        }
        if !terms.is_empty() && commas != 1 {
            let what = if commas == 0 { "missing" } else { "doubled" };
            notes.push((
                sep_at,
                format!("{what} ',' between terms (udev reads whitespace and commas alike; write one ',')"),
            ));
        }
        let key_at = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == key_at {
            return Err((i, "expected a key such as ACTION, SUBSYSTEM or RUN".into()));
        }
        let key = &text[key_at..i];
        let (mut attr, mut attr_at) = (None, i);
        if b.get(i) == Some(&b'{') {
            attr_at = i + 1;
            let close = text[i..]
                .find(['}', '"'])
                .filter(|&c| b[i + c] == b'}')
                .ok_or((i, format!("'{{' after {key} has no closing '}}'")))?;
            attr = Some(&text[i + 1..i + close]);
            i += close + 1;
        }
        skip_ws(&mut i);
        let op_at = i;
        let op = ["==", "!=", "+=", "-=", ":=", "="]
            .into_iter()
            .find(|op| text[i..].starts_with(op))
            .ok_or((
                i,
                format!("expected an operator (==, !=, = or +=) after {key}"),
            ))?;
        i += op.len();
        skip_ws(&mut i);
        // udev: e"..." takes C escapes
        let c_escapes = b.get(i) == Some(&b'e') && b.get(i + 1) == Some(&b'"');
        if c_escapes {
            i += 1;
        }
        if b.get(i) != Some(&b'"') {
            return Err((
                i,
                format!("expected a value in double quotes after {key}{op}"),
            ));
        }
        let value_at = i + 1;
        let mut value = String::new();
        let mut j = value_at;
        loop {
            let Some(c) = text[j..].chars().next() else {
                return Err((i, "unclosed quote: the value has no closing '\"'".into()));
            };
            if c == '"' {
                break;
            }
            if c == '\\' && j + 1 < b.len() {
                let n = b[j + 1];
                let esc = if n == b'"' {
                    Some('"')
                } else if c_escapes {
                    match n {
                        b'\\' => Some('\\'),
                        b'n' => Some('\n'),
                        b't' => Some('\t'),
                        b'r' => Some('\r'),
                        b'a' => Some('\x07'),
                        b'b' => Some('\x08'),
                        b'f' => Some('\x0c'),
                        b'v' => Some('\x0b'),
                        b'\'' => Some('\''),
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some(e) = esc {
                    value.push(e);
                    j += 2;
                    continue;
                }
            }
            value.push(c);
            j += c.len_utf8();
        }
        i = j + 1;
        terms.push(Term {
            key,
            key_at,
            attr,
            attr_at,
            op,
            op_at,
            value,
            value_at,
        });
    }
}

/// Compiles sources (already read) into a rule set.
///
/// As udev 252 reads rules (docs/udev-rules-compat.md):
/// - a line udev would skip (a bad term, an unknown key, a wrong operator,
///   an unknown user or group, ...) is skipped with an error and the rest
///   loads: the error is in [`RuleSet::errors`];
/// - a construct hotplugd cannot do as udev would (`PROGRAM`, `TEST`,
///   `NAME`, ...) refuses the whole set: `Err` with every error, so `run`
///   never runs with fewer rules than udev would have;
/// - what udev accepts with a note (coerced operators, patterns that can
///   never match, options without meaning here) is a warning.
pub fn compile(sources: &[Source], builtins: &[&str]) -> Result<RuleSet, Vec<Diagnostic>> {
    compile_with(sources, builtins, &SystemNames)
}

/// Resolves `OWNER`/`GROUP` names (once, at load).
pub trait Names {
    /// The uid of user `name`; `Ok(None)` if there is none.
    fn user(&self, name: &str) -> Result<Option<u32>, String>;
    /// The gid of group `name`; `Ok(None)` if there is none.
    fn group(&self, name: &str) -> Result<Option<u32>, String>;
}

/// The system's user and group databases (`getpwnam`, `getgrnam`).
pub struct SystemNames;

impl Names for SystemNames {
    fn user(&self, name: &str) -> Result<Option<u32>, String> {
        crate::sys::user_by_name(name).map(|u| u.map(|(uid, _)| uid))
    }
    fn group(&self, name: &str) -> Result<Option<u32>, String> {
        crate::sys::group_by_name(name)
    }
}

/// [`compile`] with `names` resolving `OWNER` and `GROUP`.
pub fn compile_with(
    sources: &[Source],
    builtins: &[&str],
    names: &dyn Names,
) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut rs = RuleSet::default();
    let mut refused = Vec::new();
    let mut skipped = Vec::new();
    let skip = |mut d: Diagnostic| {
        d.message.push_str(" (line skipped, as udev skips it)");
        d
    };
    for (fi, src) in sources.iter().enumerate() {
        rs.files.push(src.name.clone());
        let file_first_rule = rs.rules.len();
        // (label name, rule index) and (rule index, target, diagnostic if missing)
        let mut labels: Vec<(String, usize)> = Vec::new();
        let mut gotos: Vec<(usize, String, Diagnostic)> = Vec::new();
        for l in logical_lines(&src.text) {
            let lexed = match lex(&l.text) {
                Ok(t) => t,
                Err((at, msg)) => {
                    skipped.push(skip(l.diag(&src.name, at, msg)));
                    continue;
                }
            };
            let terms = lexed.terms;
            let mut b = RuleBuilder {
                src,
                l: &l,
                builtins,
                names,
                errors: Vec::new(),
                refused: Vec::new(),
                ignored: Vec::new(),
                warnings: Vec::new(),
                matches: Vec::new(),
                actions: Vec::new(),
                imports: Vec::new(),
                import_fails: None,
                goto: None,
                last_rule: false,
                label: None,
            };
            for (at, msg) in lexed.notes {
                b.warn(at, msg);
            }
            for t in &terms {
                b.term(t);
            }
            if b.matches.len() > MAX_MATCHES_PER_RULE {
                b.refuse(terms[0].key_at, format!("more than {MAX_MATCHES_PER_RULE} match terms in one rule (MAX_MATCHES_PER_RULE)"));
            }
            if b.actions.len() > MAX_ACTIONS_PER_RULE {
                b.refuse(terms[0].key_at, format!("more than {MAX_ACTIONS_PER_RULE} assignments in one rule (MAX_ACTIONS_PER_RULE)"));
            }
            let warn_noop = b.ignored.is_empty()
                && b.actions.is_empty()
                && b.goto.is_none()
                && !b.last_rule
                && b.label.is_none()
                && b.imports.is_empty();
            let RuleBuilder {
                errors: errs,
                refused: mut refs,
                ignored,
                warnings,
                mut matches,
                actions,
                imports,
                import_fails,
                goto,
                last_rule,
                label,
                ..
            } = b;
            if !refs.is_empty() {
                refused.append(&mut refs);
                continue;
            }
            if !errs.is_empty() {
                skipped.extend(errs.into_iter().map(skip));
                continue;
            }
            rs.warnings.extend(warnings);
            skipped.extend(ignored);
            if matches.is_empty()
                && actions.is_empty()
                && imports.is_empty()
                && import_fails.is_none()
                && goto.is_none()
                && label.is_none()
                && !last_rule
            {
                // nothing left to do (only ignored terms); warned above
                continue;
            }
            let idx = rs.rules.len();
            if idx >= MAX_RULES {
                refused.push(l.diag(
                    &src.name,
                    0,
                    format!("more than {MAX_RULES} rules in all (MAX_RULES)"),
                ));
                continue;
            }
            if warn_noop {
                let mut w = l.diag(
                    &src.name,
                    0,
                    "rule has no assignment (RUN, ENV, ATTR, OWNER, GROUP, MODE, SYMLINK, TAG, IMPORT, GOTO or OPTIONS): it does nothing"
                        .into(),
                );
                w.warning = true;
                rs.warnings.push(w);
            }
            if let Some(name) = &label {
                if let Some((_, first)) = labels.iter().find(|(n, _)| n == name) {
                    let mut w = l.diag(
                        &src.name,
                        0,
                        format!(
                            "LABEL \"{name}\" is also on line {}: a GOTO goes to the first one after it",
                            rs.rules[*first].line
                        ),
                    );
                    w.warning = true;
                    rs.warnings.push(w);
                }
                labels.push((name.clone(), idx));
            }
            let goto_set = goto.is_some();
            if let Some((target, at)) = goto {
                let d = l.diag(
                    &src.name,
                    at,
                    format!(
                        "GOTO target \"{target}\" has no LABEL=\"{target}\" after it in this file"
                    ),
                );
                gotos.push((idx, target, d));
            }
            // cheapest terms first; stable, so the written order stays within a class
            matches.sort_by_key(|m| m.key.cost());
            let action_mask =
                matches
                    .iter()
                    .filter(|m| m.key == MatchKey::Action)
                    .fold(0xff, |acc, m| {
                        let allowed = super::action_mask(&m.glob);
                        acc & if m.negate { !allowed } else { allowed }
                    });
            let m0 = rs.matches.len();
            rs.matches.extend(matches);
            let a0 = rs.actions.len();
            rs.actions.extend(actions);
            let only_label = m0 == rs.matches.len()
                && a0 == rs.actions.len()
                && !last_rule
                && !goto_set
                && imports.is_empty()
                && import_fails.is_none();
            rs.rules.push(Rule {
                file: fi,
                line: l.first_line(),
                matches: m0..rs.matches.len(),
                actions: a0..rs.actions.len(),
                imports,
                import_fails,
                goto: None,
                goto_name: None,
                goto_dropped: None,
                last_rule,
                action_mask,
                // udev: LABEL may share a line; a GOTO lands on that line and
                // evaluates it. Only a line of LABEL alone never matches.
                label: label.is_some() && only_label,
                label_name: label.map(Into::into),
            });
        }
        for (idx, target, d) in gotos {
            // GOTO jumps forward only, to the first such label after it in
            // the same file; without one, udev drops the GOTO and keeps the rule
            match labels.iter().find(|(n, li)| *n == target && *li > idx) {
                Some((_, li)) => {
                    rs.rules[idx].goto = Some(*li);
                    rs.rules[idx].goto_name = Some(target.into());
                }
                None => {
                    let mut d = d;
                    if let Some((_, li)) = labels.iter().find(|(n, _)| *n == target) {
                        d.message = format!(
                            "LABEL=\"{target}\" is before this GOTO (line {}): GOTO only jumps forward, so rules cannot loop",
                            rs.rules[*li].line
                        );
                    }
                    d.message
                        .push_str(" (the GOTO is ignored, as udev ignores it; the rule loads)");
                    skipped.push(d);
                    rs.rules[idx].goto_dropped = Some(target.into());
                }
            }
        }
        debug_assert!(rs.rules[file_first_rule..].iter().all(|r| r.file == fi));
    }
    let order = |d: &Diagnostic| (sources.iter().position(|s| s.name == d.file), d.line, d.col);
    if refused.is_empty() {
        skipped.sort_by_key(order);
        rs.errors = skipped;
        Ok(rs)
    } else {
        // files in the order given; within a file, by position
        refused.append(&mut skipped);
        refused.sort_by_key(order);
        Err(refused)
    }
}

struct RuleBuilder<'a> {
    src: &'a Source,
    l: &'a Logical,
    builtins: &'a [&'a str],
    names: &'a dyn Names,
    /// Lines udev skips (the rest of the file loads).
    errors: Vec<Diagnostic>,
    /// Constructs hotplugd refuses (nothing loads).
    refused: Vec<Diagnostic>,
    /// Errors udev reports but loads the line past (a term ignored).
    ignored: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    matches: Vec<Match>,
    actions: Vec<Action>,
    imports: Vec<Box<str>>,
    import_fails: Option<Box<str>>,
    goto: Option<(String, usize)>,
    last_rule: bool,
    label: Option<String>,
}

/// The builtins udev 252 has (`udevadm test-builtin --help`).
const UDEV_BUILTINS: [&str; 12] = [
    "blkid",
    "btrfs",
    "hwdb",
    "input_id",
    "keyboard",
    "kmod",
    "net_id",
    "net_setup_link",
    "path_id",
    "uaccess",
    "usb_id",
    "net_driver",
];

const MATCH_KEYS: [&str; 13] = [
    "ACTION",
    "SUBSYSTEM",
    "DEVTYPE",
    "DEVPATH",
    "KERNEL",
    "DRIVER",
    "ENV",
    "USB",
    "ATTR",
    "ATTRS",
    "KERNELS",
    "SUBSYSTEMS",
    "DRIVERS",
];

impl RuleBuilder<'_> {
    fn err(&self, at: usize, msg: String) -> Diagnostic {
        self.l.diag(&self.src.name, at, msg)
    }

    /// An error udev would skip the line for.
    fn fail(&mut self, at: usize, msg: String) {
        let d = self.err(at, msg);
        self.errors.push(d);
    }

    /// A construct hotplugd cannot do as udev would: nothing loads.
    fn refuse(&mut self, at: usize, msg: String) {
        let d = self.err(at, msg);
        self.refused.push(d);
    }

    /// An error udev reports while loading the line without the term.
    fn ignore(&mut self, at: usize, msg: String) {
        let d = self.err(at, msg);
        self.ignored.push(d);
    }

    /// Loads, with a note (`check --strict` makes it an error).
    fn warn(&mut self, at: usize, msg: String) {
        let mut d = self.err(at, msg);
        d.warning = true;
        self.warnings.push(d);
    }

    /// udev's coercion of an operator it accepts with a note.
    fn coerce(&mut self, t: &Term<'_>, to: &str) {
        let key = match t.attr {
            Some(a) => format!("{}{{{a}}}", t.key),
            None => t.key.to_string(),
        };
        let op = t.op;
        self.warn(
            t.op_at,
            format!("{key} {op} is taken as {key} {to} (as udev does); write {to}"),
        );
    }

    fn term(&mut self, t: &Term<'_>) {
        if t.value.len() > MAX_VALUE_LEN {
            return self.refuse(
                t.value_at,
                format!(
                    "value is {} bytes; the limit is {MAX_VALUE_LEN} (MAX_VALUE_LEN)",
                    t.value.len()
                ),
            );
        }
        let is_match = t.op == "==" || t.op == "!=";
        let key = t.key;
        let simple = |k| match k {
            "ACTION" => Some(MatchKey::Action),
            "SUBSYSTEM" => Some(MatchKey::Subsystem),
            "DEVTYPE" => Some(MatchKey::Devtype),
            "DEVPATH" => Some(MatchKey::Devpath),
            "KERNEL" => Some(MatchKey::Kernel),
            "DRIVER" => Some(MatchKey::Driver),
            "KERNELS" => Some(MatchKey::Kernels),
            "SUBSYSTEMS" => Some(MatchKey::Subsystems),
            "DRIVERS" => Some(MatchKey::Drivers),
            _ => None,
        };
        if let Some(mk) = simple(key) {
            if t.attr.is_some() {
                return self.fail(t.attr_at - 1, format!("{key} takes no {{...}}"));
            }
            if !is_match {
                return self.fail(
                    t.op_at,
                    format!(
                        "{key} is a match key: use == or != (\"{}\" is an assignment)",
                        t.op
                    ),
                );
            }
            return self.add_match(mk, t);
        }
        match key {
            "ENV" => self.env(t, is_match),
            "ATTR" | "ATTRS" => {
                let Some(name) = self.attr_name(t, subst::valid_attr_name, "an attribute name (a relative path below the device, no '..')") else {
                    return;
                };
                if is_match {
                    let mk = if key == "ATTR" {
                        MatchKey::Attr(name.into())
                    } else {
                        MatchKey::Attrs(name.into())
                    };
                    return self.add_match(mk, t);
                }
                if key == "ATTRS" {
                    return self.fail(t.op_at, "ATTRS is a match key: use == or != (to write an attribute, ATTR{file}=\"value\")".into());
                }
                match t.op {
                    "=" => {}
                    "+=" | ":=" => self.coerce(t, "="),
                    _ => return self.fail(t.op_at, format!("ATTR{{}} takes ==, != or =, not {}", t.op)),
                }
                if let Some(value) = self.template(&t.value, t.value_at) {
                    self.actions.push(Action::WriteAttr {
                        name: name.into(),
                        value,
                    });
                }
            }
            "USB" => {
                let Some(name) = self.attr_name(t, |n| usb::FIELDS.iter().any(|f| f.as_bytes() == n), "one of idVendor idProduct bcdDevice bDeviceClass bDeviceSubClass bDeviceProtocol bInterfaceClass bInterfaceSubClass bInterfaceProtocol busnum devnum") else {
                    return;
                };
                let field = usb::FIELDS.iter().find(|f| **f == name).copied().unwrap_or("idVendor");
                if !is_match {
                    return self.fail(t.op_at, "USB{} is a match key: use == or !=".into());
                }
                self.add_match(MatchKey::Usb(field), t)
            }
            "RUN" => self.run(t),
            "OPTIONS" => self.options(t),
            "GOTO" => {
                if t.op != "=" || t.attr.is_some() {
                    return self.fail(t.op_at, "GOTO takes = (GOTO=\"label\")".into());
                }
                if t.value.is_empty() {
                    return self.fail(t.value_at, "GOTO needs a label name".into());
                }
                if let Some((first, _)) = &self.goto {
                    let msg = format!("a second GOTO on this line is ignored (as udev does): the first, GOTO=\"{first}\", holds");
                    return self.warn(t.key_at, msg);
                }
                self.goto = Some((t.value.to_string(), t.value_at));
            }
            "LABEL" => {
                if t.op != "=" || t.attr.is_some() {
                    return self.fail(t.op_at, "LABEL takes = (LABEL=\"name\")".into());
                }
                if t.value.is_empty() {
                    return self.fail(t.value_at, "LABEL needs a name".into());
                }
                self.label = Some(t.value.to_string());
            }
            "OWNER" | "GROUP" | "MODE" => self.node(t),
            "SYMLINK" => self.symlink(t),
            "TAG" => self.tag(t),
            "IMPORT" => self.import(t),
            "SECLABEL" => {
                if t.attr.is_none() || is_match || t.op == "-=" {
                    return self.fail(t.op_at, "SECLABEL takes {module} and =, += or := (SECLABEL{selinux}=\"label\")".into());
                }
                self.warn(t.key_at, "SECLABEL{} is ignored: hotplugd applies no security labels to device nodes".into())
            }
            "NAME" => self.refuse(t.key_at, "NAME is not supported: hotplugd does not rename devices or interfaces".into()),
            "PROGRAM" | "RESULT" => self.refuse(
                t.key_at,
                format!("{key} is not supported: rules cannot run programs to decide a match (the daemon would wait on it); decide in the RUN handler"),
            ),
            "TEST" => self.refuse(t.key_at, "TEST is not supported: test for the file in the RUN handler, or match ATTR{...}".into()),
            "TAGS" if is_match && t.attr.is_none() => self.add_match(MatchKey::Tag, t),
            "TAGS" => self.fail(t.op_at, "TAGS is a match key: use == or != (to set a tag: TAG+=)".into()),
            "SYSCTL" | "CONST" => {
                self.refuse(t.key_at, format!("{key} is a udev key that hotplugd does not support"))
            }
            _ => {
                let upper = key.to_ascii_uppercase();
                let known = MATCH_KEYS.contains(&upper.as_str())
                    || ["RUN", "OPTIONS", "GOTO", "LABEL", "OWNER", "GROUP", "MODE", "SYMLINK", "TAG", "IMPORT"].contains(&upper.as_str());
                let hint = if known && upper != key {
                    format!(": keys are upper case ({upper})")
                } else {
                    String::new()
                };
                self.fail(t.key_at, format!("unknown key '{key}'{hint}"))
            }
        }
    }

    /// `ENV{KEY}`: ==, != match; = sets ("" removes); += appends; := as =.
    fn env(&mut self, t: &Term<'_>, is_match: bool) {
        let Some(name) = self.attr_name(
            t,
            subst::valid_env_name,
            "a variable name (letters, digits, _)",
        ) else {
            return;
        };
        if is_match {
            return self.add_match(MatchKey::Env(name.into()), t);
        }
        let append = match t.op {
            "=" => false,
            "+=" => true,
            ":=" => {
                self.coerce(t, "=");
                false
            }
            _ => {
                return self.fail(
                    t.op_at,
                    format!("ENV{{}} takes ==, !=, = or +=, not {}", t.op),
                )
            }
        };
        if matches!(
            name,
            "ACTION"
                | "DEVLINKS"
                | "DEVNAME"
                | "DEVPATH"
                | "DEVTYPE"
                | "DRIVER"
                | "IFINDEX"
                | "MAJOR"
                | "MINOR"
                | "SEQNUM"
                | "SUBSYSTEM"
                | "TAGS"
        ) {
            return self.fail(
                t.attr_at,
                format!("ENV{{{name}}} cannot be assigned: it identifies the event or its device (udev refuses it too)"),
            );
        }
        if let Some(value) = self.template(&t.value, t.value_at) {
            self.actions.push(Action::SetEnv {
                key: name.into(),
                value,
                append,
            });
        }
    }

    /// `OWNER`, `GROUP`, `MODE`: = or := (final); += taken as =.
    fn node(&mut self, t: &Term<'_>) {
        let key = t.key;
        if t.attr.is_some() {
            return self.fail(t.attr_at - 1, format!("{key} takes no {{...}}"));
        }
        let fixed = match t.op {
            "=" => false,
            ":=" => true,
            "+=" => {
                self.coerce(t, "=");
                false
            }
            _ => {
                return self.fail(
                    t.op_at,
                    format!("{key} takes = or := (final), not {}", t.op),
                )
            }
        };
        let v = t.value.trim();
        if v.contains(['$', '%']) {
            return self.refuse(
                t.value_at,
                format!("{key} with a substitution is not supported: hotplugd resolves {key} once, when the rules load; write the name or number"),
            );
        }
        let (nk, value) = match key {
            "MODE" => {
                let Some(m) = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777 && !v.is_empty())
                else {
                    // udev loads it and fails to parse it on every event
                    return self.warn(
                        t.value_at,
                        format!("MODE \"{v}\" is not an octal mode (e.g. \"0660\"): ignored, as udev ignores it"),
                    );
                };
                (NodeKey::Mode, m)
            }
            _ => {
                let user = key == "OWNER";
                let nk = if user { NodeKey::Owner } else { NodeKey::Group };
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    match v.parse::<u32>() {
                        Ok(n) => (nk, n),
                        Err(_) => {
                            return self.fail(t.value_at, format!("{key} \"{v}\" is out of range"))
                        }
                    }
                } else {
                    let found = if user {
                        self.names.user(v)
                    } else {
                        self.names.group(v)
                    };
                    match found {
                        Ok(Some(id)) => (nk, id),
                        Ok(None) => {
                            // udev 252: "Unknown group 'x', ignoring": the
                            // line loads without the term
                            let what = if user { "user" } else { "group" };
                            return self.ignore(
                                t.value_at,
                                format!("unknown {what} \"{v}\" (not in the {what} database here): {key} is ignored, as udev ignores it; the rest of the line loads"),
                            );
                        }
                        Err(e) => {
                            return self.ignore(
                                t.value_at,
                                format!(
                                "cannot look up \"{v}\": {e}: {key} is ignored, as udev ignores it"
                            ),
                            )
                        }
                    }
                }
            }
        };
        self.actions.push(Action::Node {
            key: nk,
            value,
            fixed,
        });
    }

    /// `SYMLINK`: +=, = (clears), := (clears, final).
    fn symlink(&mut self, t: &Term<'_>) {
        if t.attr.is_some() {
            return self.fail(t.attr_at - 1, "SYMLINK takes no {...}".into());
        }
        let op = match t.op {
            "+=" => AssignOp::Add,
            "=" => AssignOp::Assign,
            ":=" => AssignOp::Final,
            // udev 252: true if a link an earlier rule set matches
            "==" | "!=" => return self.add_match(MatchKey::Symlink, t),
            _ => {
                return self.fail(
                    t.op_at,
                    format!(
                        "SYMLINK takes +=, = or :=, not {} (udev 252 has no SYMLINK-=)",
                        t.op
                    ),
                )
            }
        };
        if let Some(value) = self.template(&t.value, t.value_at) {
            self.actions.push(Action::Symlink { op, value });
        }
    }

    /// `TAG`: +=, -=, = (clears); := taken as =.
    fn tag(&mut self, t: &Term<'_>) {
        if t.attr.is_some() {
            return self.fail(t.attr_at - 1, "TAG takes no {...}".into());
        }
        if matches!(t.op, "==" | "!=") {
            // udev 252: true if a tag an earlier rule set matches
            return self.add_match(MatchKey::Tag, t);
        }
        let op = match t.op {
            "+=" => AssignOp::Add,
            "-=" => AssignOp::Remove,
            "=" => AssignOp::Assign,
            ":=" => {
                self.coerce(t, "=");
                AssignOp::Assign
            }
            _ => {
                return self.fail(
                    t.op_at,
                    format!("TAG takes ==, !=, +=, -= or =, not {}", t.op),
                )
            }
        };
        let v = t.value.as_str();
        if v.contains(['$', '%']) {
            return self.refuse(
                t.value_at,
                "TAG with a substitution is not supported: write the tag".into(),
            );
        }
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            // udev loads it and refuses the tag on every event
            return self.warn(
                t.value_at,
                format!("\"{v}\" is not a tag name (letters, digits, _ and -): ignored, as udev ignores it"),
            );
        }
        if v.len() > MAX_TAG_LEN {
            return self.refuse(
                t.value_at,
                format!("tag is longer than {MAX_TAG_LEN} bytes (MAX_TAG_LEN)"),
            );
        }
        self.actions.push(Action::Tag { op, name: v.into() });
    }

    /// `IMPORT{builtin}="usb_id"` / `"path_id"`; other kinds: a warning,
    /// and the rule never matches (as a failing import).
    fn import(&mut self, t: &Term<'_>) {
        let Some(kind) = t.attr else {
            return self.fail(
                t.key_at + t.key.len(),
                "IMPORT needs {...}: builtin, program, file, cmdline, db or parent".into(),
            );
        };
        if !matches!(t.op, "=" | "+=" | ":=" | "==") {
            return self.fail(t.op_at, format!("IMPORT takes =, not {}", t.op));
        }
        let written = format!("IMPORT{{{kind}}}={}", super::quote(&t.value));
        match kind {
            "builtin" => {
                let name = t.value.split_ascii_whitespace().next().unwrap_or("");
                if crate::identity::BUILTINS.contains(&name) {
                    if t.value.trim() != name {
                        self.warn(t.value_at, format!("IMPORT{{builtin}}=\"{name}\" takes no arguments here; they are ignored"));
                    }
                    self.imports.push(name.into());
                } else if UDEV_BUILTINS.contains(&name) {
                    self.warn(t.value_at, format!("IMPORT{{builtin}}=\"{name}\" is not built into hotplugd (it has {}): the import fails, so this rule never matches", crate::identity::BUILTINS.join(", ")));
                    self.import_fails = Some(written.into());
                } else {
                    self.fail(t.value_at, format!("no udev builtin named \"{name}\""));
                }
            }
            "program" | "file" | "cmdline" | "db" | "parent" => {
                self.warn(t.attr_at, format!("IMPORT{{{kind}}} is not supported: the import fails, so this rule never matches (hotplugd imports only IMPORT{{builtin}}=\"usb_id\", \"path_id\" and \"input_id\")"));
                self.import_fails = Some(written.into());
            }
            _ => self.fail(
                t.attr_at,
                format!("IMPORT{{{kind}}}: expected builtin, program, file, cmdline, db or parent"),
            ),
        }
    }

    /// `OPTIONS`: one option or several separated by commas.
    fn options(&mut self, t: &Term<'_>) {
        if t.attr.is_some() || !matches!(t.op, "+=" | "=" | ":=") {
            return self.fail(
                t.op_at,
                "OPTIONS takes += (OPTIONS+=\"link_priority=10\")".into(),
            );
        }
        // udev 252 takes one option per OPTIONS ("a,b" is one unknown value)
        let opt = t.value.as_str();
        let at = t.value_at;
        if opt.is_empty() {
            return self.warn(at, "OPTIONS without an option does nothing".into());
        }
        let (name, arg) = opt.split_once('=').unwrap_or((opt, ""));
        match (name, arg) {
            ("last_rule", "") => {
                self.last_rule = true;
                self.warn(at, "OPTIONS \"last_rule\" is not in udev 252 (udev ignores it and evaluates later rules); hotplugd keeps it: no later rule is evaluated for the event".into());
            }
            ("link_priority", n) => match n.parse::<i32>() {
                Ok(p) => self.actions.push(Action::LinkPriority(p)),
                Err(_) => self.fail(at, format!("link_priority \"{n}\" is not a number")),
            },
            ("string_escape", "none") => self.actions.push(Action::StringEscape(Escape::None)),
            ("string_escape", "replace") => {
                self.actions.push(Action::StringEscape(Escape::Replace))
            }
            ("string_escape", e) => self.warn(
                at,
                format!("string_escape \"{e}\": expected none or replace; ignored (as udev does)"),
            ),
            ("log_level", l)
                if !(l == "reset"
                    || l.parse::<u8>().is_ok_and(|n| n <= 7)
                    || matches!(
                        l,
                        "emerg"
                            | "alert"
                            | "crit"
                            | "err"
                            | "warning"
                            | "notice"
                            | "info"
                            | "debug"
                    )) =>
            {
                self.fail(
                    at,
                    format!(
                        "log_level \"{l}\" is not a log level (0-7, emerg ... debug, or reset)"
                    ),
                )
            }
            (
                "static_node" | "watch" | "nowatch" | "db_persist" | "log_level" | "all_partitions",
                _,
            ) => self.warn(
                at,
                format!("OPTIONS \"{opt}\" has no meaning in hotplugd; ignored"),
            ),
            _ => self.warn(
                at,
                format!("unknown OPTIONS \"{opt}\"; ignored (as udev does)"),
            ),
        }
    }

    /// The `{...}` of a key, checked; `None` (after an error) if missing or bad.
    fn attr_name<'t>(
        &mut self,
        t: &Term<'t>,
        ok: impl Fn(&[u8]) -> bool,
        what: &str,
    ) -> Option<&'t str> {
        match t.attr {
            None => {
                self.fail(
                    t.key_at + t.key.len(),
                    format!("{} needs {{...}}: {what}", t.key),
                );
                None
            }
            Some(a) if !ok(a.as_bytes()) => {
                // udev takes any ENV{}/ATTR{} name (with substitutions, `..`):
                // skipping the line would run fewer rules than udev
                let msg = format!("'{a}' is not {what}");
                if t.key == "USB" {
                    self.fail(t.attr_at, msg);
                } else {
                    self.refuse(
                        t.attr_at,
                        format!("{msg}; hotplugd does not take this name"),
                    );
                }
                None
            }
            Some(a) => Some(a),
        }
    }

    fn template(&mut self, v: &str, at: usize) -> Option<Template> {
        match subst::parse(v.as_bytes()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.refuse(at + e.offset, e.message);
                None
            }
        }
    }

    fn add_match(&mut self, key: MatchKey, t: &Term<'_>) {
        let p = t.value.as_bytes();
        if let Err(e) = glob::check(p) {
            return self.refuse(t.value_at + e.offset(), describe_glob(e));
        }
        let mut offset = 0;
        for alt in glob::alternatives(p) {
            let at = t.value_at + offset;
            offset += alt.len() + 1;
            if let Some(msg) = cannot_match(&key, alt) {
                self.warn(at, msg);
            }
        }
        self.matches.push(Match {
            key,
            negate: t.op == "!=",
            pattern: p.into(),
            glob: glob::Compiled::new(p),
        });
    }

    fn run(&mut self, t: &Term<'_>) {
        let kind = t.attr.unwrap_or("program");
        if kind != "program" && kind != "builtin" && kind != "service" {
            return self.fail(
                t.attr_at,
                format!("RUN{{{kind}}}: expected RUN{{program}}, RUN{{builtin}} or RUN{{service}}"),
            );
        }
        match t.op {
            "+=" => {}
            "=" | ":=" => {
                return self.refuse(
                    t.op_at,
                    format!("RUN takes += (hotplugd adds to the list of handlers and never replaces it), not {}", t.op),
                )
            }
            _ => {
                return self.fail(
                    t.op_at,
                    format!("RUN takes += (hotplugd adds to the list of handlers and never replaces it), not {}", t.op),
                )
            }
        }
        let words = match split_words(&t.value) {
            Ok(w) => w,
            Err(at) => return self.refuse(t.value_at + at, "unclosed single quote in RUN".into()),
        };
        if words.is_empty() {
            // udev loads it and has nothing to run
            return self.warn(
                t.value_at,
                "RUN needs a program: this one runs nothing".into(),
            );
        }
        if words.len() > MAX_ARGS {
            return self.refuse(
                t.value_at,
                format!("more than {MAX_ARGS} arguments (MAX_ARGS)"),
            );
        }
        let mut argv = Vec::new();
        for (w, at) in &words {
            match self.template(w, t.value_at + at) {
                Some(tpl) => argv.push(tpl),
                None => return,
            }
        }
        if kind == "builtin" {
            let name = words[0].0.as_str();
            let Some(id) = self.builtins.iter().position(|b| *b == name) else {
                let known = if self.builtins.is_empty() {
                    "none".to_string()
                } else {
                    self.builtins.join(", ")
                };
                // a udev builtin hotplugd lacks: udev would run it
                return if UDEV_BUILTINS.contains(&name) {
                    self.refuse(
                        t.value_at,
                        format!("RUN{{builtin}}=\"{name}\" is a udev builtin that hotplugd does not have (its builtins: {known})"),
                    )
                } else {
                    self.fail(
                        t.value_at,
                        format!("no builtin named \"{name}\" (known: {known})"),
                    )
                };
            };
            argv.remove(0);
            self.actions.push(Action::Builtin {
                name: name.into(),
                id,
                args: argv,
            });
            return;
        }
        let prog = argv[0].literal().map(|p| p.to_vec());
        match prog {
            Some(p) if p.starts_with(b"/") => {}
            Some(_) => {
                return self.refuse(
                    t.value_at,
                    "RUN program must be an absolute path (no shell is used; for a shell command write RUN+=\"/bin/sh -c '...'\")".into(),
                )
            }
            None => {
                return self.refuse(
                    t.value_at,
                    "RUN program must be a literal absolute path, without substitutions".into(),
                )
            }
        }
        self.actions.push(Action::Run(Command {
            argv,
            service: kind == "service",
        }));
    }
}

/// Splits a RUN value into words at spaces and tabs; `'...'` groups a word
/// (the quotes are removed). Returns each word with its offset, or the
/// offset of an unclosed quote.
pub fn split_words(v: &str) -> Result<Vec<(String, usize)>, usize> {
    let b = v.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let mut w = Vec::new();
        while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
            if b[i] == b'\'' {
                let close = v[i + 1..].find('\'').ok_or(i)?;
                w.extend_from_slice(&b[i + 1..i + 1 + close]);
                i += close + 2;
            } else {
                w.push(b[i]);
                i += 1;
            }
        }
        // only ASCII quotes and spaces were removed, so this is still UTF-8
        words.push((String::from_utf8(w).unwrap_or_default(), start));
    }
    Ok(words)
}

fn describe_glob(e: GlobError) -> String {
    e.describe().to_string()
}

/// Why an alternative of a pattern can never match a value of `key`, if so.
fn cannot_match(key: &MatchKey, alt: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(alt);
    let literal = glob::is_literal(alt);
    match key {
        MatchKey::Action if !ACTIONS.iter().any(|a| glob::matches(alt, a.as_bytes())) => {
            return Some(format!(
                "ACTION \"{s}\" matches no action the kernel sends ({})",
                ACTIONS.join(", ")
            ));
        }
        MatchKey::Devpath => {
            if let Some(&c) = alt.first() {
                if !matches!(c, b'/' | b'*' | b'?' | b'[' | b'\\') {
                    return Some(format!(
                        "DEVPATH \"{s}\" cannot match: devpaths start with '/' (e.g. /devices/...)"
                    ));
                }
            }
        }
        MatchKey::Subsystem
        | MatchKey::Devtype
        | MatchKey::Driver
        | MatchKey::Subsystems
        | MatchKey::Drivers
            if alt.contains(&b'/') =>
        {
            return Some(format!(
                "\"{s}\" cannot match: names contain no '/' (to match a path, use DEVPATH)"
            ));
        }
        MatchKey::Usb(_) | MatchKey::Attr(_) | MatchKey::Attrs(_) if literal && !alt.is_empty() => {
            let name: &str = match key {
                MatchKey::Usb(f) => f,
                MatchKey::Attr(n) | MatchKey::Attrs(n) => n,
                _ => "",
            };
            let hex_digits = match name {
                "idVendor" | "idProduct" | "bcdDevice" => 4,
                "bDeviceClass" | "bDeviceSubClass" | "bDeviceProtocol" | "bInterfaceClass"
                | "bInterfaceSubClass" | "bInterfaceProtocol" => 2,
                _ => 0,
            };
            if hex_digits > 0 {
                let ok = alt.len() == hex_digits
                    && alt
                        .iter()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
                if !ok {
                    let lower = s.to_ascii_lowercase();
                    let hint = if lower.len() == hex_digits
                        && lower.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        format!(": write \"{lower}\"")
                    } else {
                        format!(
                            " (e.g. \"{}\")",
                            if hex_digits == 4 { "0403" } else { "02" }
                        )
                    };
                    return Some(format!(
                        "{name} \"{s}\" cannot match: sysfs writes {name} as {hex_digits} lower-case hex digits{hint}"
                    ));
                }
            }
            if matches!(key, MatchKey::Usb("busnum" | "devnum"))
                && (alt.len() > 1 && alt[0] == b'0' || !alt.iter().all(u8::is_ascii_digit))
            {
                return Some(format!(
                    "{name} \"{s}\" cannot match: USB{{{name}}} is decimal without leading zeros (e.g. \"3\")"
                ));
            }
        }
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_wants_root_and_no_group_or_other_write_unless_sticky() {
        // (uid, mode, directory, rules directory) -> trusted
        let cases = [
            (0, 0o100644, false, false, true),
            (0, 0o100664, false, false, false),
            (0, 0o101666, false, false, false), // a sticky file means nothing
            (1000, 0o100644, false, false, false),
            (0, 0o40755, true, false, true),
            (0, 0o40775, true, false, false),
            (0, 0o40777, true, false, false),
            (0, 0o41777, true, false, true), // like /tmp
            (0, 0o41775, true, false, true),
            (1000, 0o41777, true, false, false), // sticky, but not root's
            (0, 0o41777, true, true, false),     // a rules directory: never
        ];
        for (uid, mode, dir, strict, ok) in cases {
            assert_eq!(
                problem(uid, mode, dir, strict).is_none(),
                ok,
                "uid {uid} mode {mode:o} dir {dir} strict {strict}"
            );
        }
        assert_eq!(
            problem(0, 0o40777, true, false).as_deref(),
            Some("is writable by group and others (mode 0777), without the sticky bit")
        );
    }

    /// What is judged is the descriptor read: when the path no longer
    /// names the file that was opened (swapped after the open), the file
    /// is refused, whatever the path now shows.
    #[test]
    fn a_file_swapped_after_it_was_opened_is_refused() {
        let dir = std::env::temp_dir().join(format!("hotplugd-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (opened, now) = (dir.join("opened"), dir.join("a.rules"));
        std::fs::write(&opened, "").unwrap();
        std::fs::write(&now, "").unwrap();
        let f = std::fs::File::open(&opened).unwrap();
        let meta = f.metadata().unwrap();
        let mut t = Trust::default();
        t.check_read(&now, &meta);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(t.found.len(), 1, "{:?}", t.found);
        assert!(
            t.found[0]
                .1
                .message
                .contains("was replaced while it was read"),
            "{:?}",
            t.found
        );
    }

    fn rules(text: &str) -> usize {
        let src = Source {
            name: "t.rules".into(),
            text: text.into(),
        };
        compile(&[src], &[])
            .map(|rs| rs.len())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn a_comment_ending_in_a_backslash_is_only_a_comment() {
        // as udev: the `#` line is skipped, the next line is a rule of its own
        assert_eq!(
            rules("# a comment \\\nSUBSYSTEM==\"tty\", RUN+=\"/bin/true\"\n"),
            1
        );
        // a comment inside a continuation is skipped; the rule goes on
        assert_eq!(
            rules("SUBSYSTEM==\"tty\", \\\n# note\n  RUN+=\"/bin/true\"\n"),
            1
        );
    }

    #[test]
    fn private_properties_are_set_and_read_but_not_exported() {
        let src = Source {
            name: "t.rules".into(),
            text: "SUBSYSTEM==\"tty\", ENV{.seen}=\"1\"\nENV{.seen}==\"1\", ENV{SEEN}=\"$env{.seen}\", RUN+=\"/bin/true\"\n".into(),
        };
        let rs = compile(&[src], &[]).expect("loads");
        let raw = b"change@/devices/virtual/tty/tty1\0ACTION=change\0DEVPATH=/devices/virtual/tty/tty1\0SUBSYSTEM=tty\0SEQNUM=1\0";
        let ev = crate::uevent::Uevent::parse(raw).expect("event");
        let mut m = super::super::Matched::default();
        rs.evaluate(&ev, &super::super::NoSysfs, &mut m);
        assert_eq!(m.count, 2);
        let env = rs.env(&ev, &m);
        assert!(env.iter().any(|(k, v)| k == "SEEN" && v == b"1"));
        assert!(!env.iter().any(|(k, _)| k.starts_with('.')));
        assert!(rs.env_assignments(&m).all(|(k, _)| !k.starts_with('.')));
    }

    /// Compiles `text`, renders it, compiles the rendering: the rendering
    /// loads as the same number of rules and renders the same again.
    /// Returns both rule sets.
    fn render_and_reload(text: &str) -> (RuleSet, RuleSet) {
        let load = |text: String| {
            compile(
                &[Source {
                    name: "t.rules".into(),
                    text,
                }],
                &[],
            )
            .expect("loads")
        };
        let rs = load(text.into());
        let once = rs.render_file(0);
        let again = load(once.clone());
        assert_eq!(again.len(), rs.len(), "{once}");
        assert_eq!(again.render_file(0), once);
        (rs, again)
    }

    /// A rule whose only term was a GOTO with no LABEL after it (dropped,
    /// as udev drops it) renders with that GOTO, so the rendered rules load
    /// as the same rules (found by the rules_parse fuzzer on a vendor file
    /// cut short).
    #[test]
    fn a_rule_left_empty_by_a_dropped_goto_renders_and_reloads_the_same() {
        let (rs, _) = render_and_reload(
            "ACTION!=\"add\", GOTO=\"end\"\nGOTO=\"end\"\nSUBSYSTEM==\"tty\", RUN+=\"/bin/true\"\n",
        );
        assert_eq!(rs.len(), 3);
        assert_eq!(rs.errors.len(), 2);
    }

    /// GOTO and LABEL names with a `\"` render quoted as values are, so
    /// they reload as the same names (the rules_parse fuzzer).
    #[test]
    fn goto_and_label_names_with_a_quote_render_and_reload_the_same() {
        for text in [
            "SUBSYSTEM==\"tty\", GOTO=\"a\\\" b\"\nRUN+=\"/bin/true\"\nLABEL=\"a\\\" b\"\n",
            "GOTO=\"gone\\\" x\"\n",
        ] {
            let (rs, again) = render_and_reload(text);
            assert_eq!(
                again.rules.iter().map(|r| r.goto).collect::<Vec<_>>(),
                rs.rules.iter().map(|r| r.goto).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_label_may_share_its_line_and_a_goto_lands_on_it() {
        let src = Source {
            name: "t.rules".into(),
            text: "SUBSYSTEM==\"tty\", GOTO=\"x\"\nENV{SKIPPED}=\"1\"\nLABEL=\"x\", SUBSYSTEM==\"tty\", ENV{LANDED}=\"1\"\n".into(),
        };
        let rs = compile(&[src], &[]).expect("loads");
        let raw = b"change@/devices/virtual/tty/tty1\0ACTION=change\0DEVPATH=/devices/virtual/tty/tty1\0SUBSYSTEM=tty\0SEQNUM=1\0";
        let ev = crate::uevent::Uevent::parse(raw).expect("event");
        let mut m = super::super::Matched::default();
        rs.evaluate(&ev, &super::super::NoSysfs, &mut m);
        let env = rs.env(&ev, &m);
        assert!(env.iter().any(|(k, _)| k == "LANDED"));
        assert!(!env.iter().any(|(k, _)| k == "SKIPPED"));
        // the round trip keeps the label with its terms
        let again = compile(
            &[Source {
                name: "t.rules".into(),
                text: rs.render_file(0),
            }],
            &[],
        )
        .expect("rendered rules load");
        assert_eq!(again.render_file(0), rs.render_file(0));
    }
}
