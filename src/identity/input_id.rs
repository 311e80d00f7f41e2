//! udev's `input_id` builtin: what kind of input device an `input` node
//! is (`ID_INPUT_KEYBOARD`, `ID_INPUT_MOUSE`, ...), from the capability
//! bitmaps the kernel prints in sysfs (the `-kbd` / `-mouse` of
//! `/dev/input/by-id/usb-..-event-kbd`).
//!
//! The device: the node itself or its nearest `input` ancestor that has
//! `capabilities/ev` (an `eventN` node's parent `inputN`). Nothing is set
//! when there is none (the builtin still succeeds, as udev's does).
//!
//! The bitmaps (`capabilities/{ev,abs,rel,key}`, `properties`) are hex
//! words separated by spaces, the most significant first, each as wide as
//! the `long` of the process that reads them: a 64-bit kernel prints
//! 32-bit words to a 32-bit reader (`input_bits_to_string`,
//! `in_compat_syscall`). udev reads them with its own `unsigned long`, and
//! so does this code with the target's word size ([`usize`]): the same
//! result as udev built for the same target. One exception, where udev
//! would misread: a 32-bit build that finds a word of more than 8 hex
//! digits in any of the device's bitmaps is reading text a 64-bit process
//! wrote (a sysfs tree captured on a 64-bit machine, or qemu-user, whose
//! syscalls are the host's), and reads all of that device's words as
//! 64-bit. A word that does not parse or does not fit is skipped (its
//! bits stay 0), and words beyond each bitmap's size are ignored, as udev
//! does.
//!
//! The classification follows systemd v252's `udev-builtin-input_id.c`
//! (read, not copied): accelerometer, pointing stick, mouse (relative or
//! absolute axes with a mouse button), touchpad, touchscreen, joystick
//! (with its keyboard heuristic), tablet, tablet pad; `ID_INPUT_KEY` for
//! any key below `BTN_MISC` or in the two high key ranges (or a scroll
//! wheel alone); `ID_INPUT_KEYBOARD` when keys 1..31 are all there;
//! `ID_INPUT_SWITCH` for `EV_SW`.
//!
//! Difference from udev 252 kept on purpose: udev also opens an `eventN`
//! node and asks the kernel (`EVIOCGABS`) for the X/Y ranges to set
//! `ID_INPUT_WIDTH_MM` / `ID_INPUT_HEIGHT_MM` on touchpads and tablets.
//! That is an ioctl on a device node, not sysfs; this builtin stays pure
//! and does not set them.

use super::{Dev, IdentityError, Properties, SysfsView};

// linux/input-event-codes.h (uapi), linux/input.h
const EV_KEY: usize = 0x01;
const EV_REL: usize = 0x02;
const EV_SW: usize = 0x05;
const EV_MAX: usize = 0x1f;
const ABS_X: usize = 0x00;
const ABS_Y: usize = 0x01;
const ABS_Z: usize = 0x02;
const ABS_RX: usize = 0x03;
const ABS_PRESSURE: usize = 0x18;
const ABS_MT_SLOT: usize = 0x2f;
const ABS_MT_POSITION_X: usize = 0x35;
const ABS_MT_POSITION_Y: usize = 0x36;
const ABS_MAX: usize = 0x3f;
const REL_X: usize = 0x00;
const REL_Y: usize = 0x01;
const REL_HWHEEL: usize = 0x06;
const REL_WHEEL: usize = 0x08;
const REL_MAX: usize = 0x0f;
const KEY_MAX: usize = 0x2ff;
const BTN_MISC: usize = 0x100;
const BTN_0: usize = 0x100;
const BTN_MOUSE: usize = 0x110;
const BTN_JOYSTICK: usize = 0x120;
const BTN_DIGI: usize = 0x140;
const BTN_TOOL_PEN: usize = 0x140;
const BTN_TOOL_FINGER: usize = 0x145;
const BTN_TOUCH: usize = 0x14a;
const BTN_STYLUS: usize = 0x14b;
const KEY_OK: usize = 0x160;
const BTN_DPAD_UP: usize = 0x220;
const BTN_DPAD_RIGHT: usize = 0x223;
const KEY_ALS_TOGGLE: usize = 0x230;
const BTN_TRIGGER_HAPPY1: usize = 0x2c0;
const BTN_TRIGGER_HAPPY40: usize = 0x2e7;
const INPUT_PROP_DIRECT: usize = 0x01;
const INPUT_PROP_POINTING_STICK: usize = 0x05;
const INPUT_PROP_ACCELEROMETER: usize = 0x06;
const INPUT_PROP_MAX: usize = 0x1f;
const BUS_I2C: u16 = 0x18;

/// Keys a keyboard has and a joystick rarely does (udev's heuristic).
const WELL_KNOWN_KEYBOARD_KEYS: [usize; 10] = [29, 58, 69, 110, 113, 140, 144, 155, 164, 224];

/// Bits in a word of udev's arrays: the target's `long` (udev's
/// `BITS_PER_LONG`).
const WORD: usize = usize::BITS as usize;

/// 64-bit words that hold the largest bitmap (`key`).
const MAX_WORDS: usize = KEY_MAX / 64 + 1;

/// A capability bitmap: the bits udev's array of `NBITS(max)` target
/// words holds.
struct Bits {
    w: [u64; MAX_WORDS],
    /// Bits udev's array holds: `NBITS(max) * WORD`.
    size: usize,
}

impl Bits {
    /// udev's array for a bitmap whose highest bit is `max`.
    fn sized(max: usize) -> Bits {
        Bits {
            w: [0; MAX_WORDS],
            size: ((max - 1) / WORD + 1) * WORD,
        }
    }

    fn test(&self, bit: usize) -> bool {
        bit < self.size && (self.w[bit / 64] >> (bit % 64)) & 1 == 1
    }

    /// Fills from the text of a capability attribute written with words
    /// of `width` bits (32 or 64): words split at each space from the
    /// right, word 0 the last one.
    fn fill(&mut self, text: &[u8], width: u32) {
        for (i, word) in text.rsplit(|&b| b == b' ').enumerate() {
            let at = i * width as usize;
            if at >= self.size {
                continue;
            }
            if let Some(v) = parse_hex_word(word, width) {
                self.w[at / 64] |= v << (at % 64);
            }
        }
    }
}

/// The width of the words a device's bitmaps were written with: the
/// target's, unless a 32-bit build finds a word only a 64-bit writer
/// prints (more than 8 hex digits, after an optional `0x`).
fn writer_width(texts: &[&[u8]]) -> u32 {
    if WORD == 64 {
        return 64;
    }
    let long = |w: &&[u8]| {
        let w = w.trim_ascii();
        let w = w.strip_prefix(b"0x").unwrap_or(w);
        w.len() > 8
    };
    if texts
        .iter()
        .any(|t| t.split(|&b| b == b' ').any(|w| long(&w)))
    {
        64
    } else {
        32
    }
}

/// `strtoul(s, 16)` as udev's `safe_atolu_full` accepts it: leading
/// white space, an optional sign (`-` only for zero), an optional `0x`,
/// one hex digit at least, nothing after; `None` if it overflows a word
/// of `width` bits.
fn parse_hex_word(s: &[u8], width: u32) -> Option<u64> {
    let mut s = s;
    while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = s {
        s = rest;
    }
    let neg = s.first() == Some(&b'-');
    if matches!(s.first(), Some(b'+' | b'-')) {
        s = &s[1..];
    }
    if s.len() > 2 && matches!(&s[..2], b"0x" | b"0X") && s[2].is_ascii_hexdigit() {
        s = &s[2..];
    }
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = u64::from((b as char).to_digit(16)?);
        v = v.checked_mul(16)?.checked_add(d)?;
    }
    if width < 64 && v >> width != 0 {
        return None;
    }
    (!neg || v == 0).then_some(v)
}

/// udev's `input_id` on the device at `devpath`.
pub fn input_id<V: SysfsView + ?Sized>(
    view: &V,
    devpath: &str,
) -> Result<Properties, IdentityError> {
    let dev = Dev::new(view, devpath).ok_or(IdentityError::NoDevice)?;
    let mut props = Properties::new();
    let mut p = Some(dev);
    let input = loop {
        let Some(d) = p else { break None };
        if d.attr("capabilities/ev").is_some() {
            break Some(d);
        }
        p = d.parent_with("input", None);
    };
    let Some(input) = input else {
        return Ok(props);
    };
    let bustype = input
        .attr("id/bustype")
        .and_then(|v| parse_hex_word(&v, 64))
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(0);
    props.push("ID_INPUT", b"1");
    let text = |name: &str| input.attr(name).unwrap_or_default();
    let texts = [
        text("capabilities/ev"),
        text("capabilities/abs"),
        text("capabilities/rel"),
        text("capabilities/key"),
        text("properties"),
    ];
    let width = writer_width(&texts.each_ref().map(|t| &t[..]));
    let cap = |text: &[u8], max: usize| {
        let mut b = Bits::sized(max);
        b.fill(text, width);
        b
    };
    let ev = cap(&texts[0], EV_MAX);
    let abs = cap(&texts[1], ABS_MAX);
    let rel = cap(&texts[2], REL_MAX);
    let key = cap(&texts[3], KEY_MAX);
    let prop = cap(&texts[4], INPUT_PROP_MAX);
    let caps = Caps {
        ev,
        abs,
        rel,
        key,
        prop,
        bustype,
    };
    let is_pointer = caps.pointers(&mut props);
    let is_key = caps.keys(&mut props);
    if !is_pointer
        && !is_key
        && caps.ev.test(EV_REL)
        && (caps.rel.test(REL_WHEEL) || caps.rel.test(REL_HWHEEL))
    {
        props.push("ID_INPUT_KEY", b"1");
    }
    if caps.ev.test(EV_SW) {
        props.push("ID_INPUT_SWITCH", b"1");
    }
    Ok(props)
}

/// The bitmaps of one input device.
struct Caps {
    ev: Bits,
    abs: Bits,
    rel: Bits,
    key: Bits,
    prop: Bits,
    bustype: u16,
}

impl Caps {
    fn count(&self, bits: &Bits, range: core::ops::Range<usize>) -> usize {
        range.filter(|&b| bits.test(b)).count()
    }

    /// Pointer-like devices (udev's `test_pointers`): sets their
    /// properties; true if it is one.
    fn pointers(&self, props: &mut Properties) -> bool {
        let (ev, abs, rel, key, prop) = (&self.ev, &self.abs, &self.rel, &self.key, &self.prop);
        let has_keys = ev.test(EV_KEY);
        let has_abs = abs.test(ABS_X) && abs.test(ABS_Y);
        let has_3d = has_abs && abs.test(ABS_Z);
        if prop.test(INPUT_PROP_ACCELEROMETER) || (!has_keys && has_3d) {
            props.push("ID_INPUT_ACCELEROMETER", b"1");
            return true;
        }
        let mut is_pointing_stick = prop.test(INPUT_PROP_POINTING_STICK);
        let has_stylus = key.test(BTN_STYLUS);
        let has_pen = key.test(BTN_TOOL_PEN);
        let finger_but_no_pen = key.test(BTN_TOOL_FINGER) && !has_pen;
        let has_mouse_button = (BTN_MOUSE..BTN_JOYSTICK).any(|b| key.test(b));
        let has_rel = ev.test(EV_REL) && rel.test(REL_X) && rel.test(REL_Y);
        let mut has_mt = abs.test(ABS_MT_POSITION_X) && abs.test(ABS_MT_POSITION_Y);
        // a device that claims every abs axis is not multitouch
        if has_mt && abs.test(ABS_MT_SLOT) && abs.test(ABS_MT_SLOT - 1) {
            has_mt = false;
        }
        let is_direct = prop.test(INPUT_PROP_DIRECT);
        let has_touch = key.test(BTN_TOUCH);
        let has_pad_buttons = key.test(BTN_0) && has_stylus && !has_pen;
        // a mouse with more than 16 buttons runs into the joystick range
        let joystick_buttons = if key.test(BTN_JOYSTICK - 1) {
            0
        } else {
            self.count(key, BTN_JOYSTICK..BTN_DIGI)
                + self.count(key, BTN_TRIGGER_HAPPY1..BTN_TRIGGER_HAPPY40 + 1)
                + self.count(key, BTN_DPAD_UP..BTN_DPAD_RIGHT + 1)
        };
        let joystick_axes = self.count(abs, ABS_RX..ABS_PRESSURE);
        let joystickish = joystick_buttons > 0 || joystick_axes > 0;

        let (mut is_tablet, mut is_touchpad, mut is_touchscreen) = (false, false, false);
        let (mut is_abs_mouse, mut is_joystick) = (false, false);
        if has_abs {
            if has_stylus || has_pen {
                is_tablet = true;
            } else if finger_but_no_pen && !is_direct {
                is_touchpad = true;
            } else if has_mouse_button {
                is_abs_mouse = true;
            } else if has_touch || is_direct {
                is_touchscreen = true;
            } else if joystickish {
                is_joystick = true;
            }
        } else if joystickish {
            is_joystick = true;
        }
        if has_mt {
            if has_stylus || has_pen {
                is_tablet = true;
            } else if finger_but_no_pen && !is_direct {
                is_touchpad = true;
            } else if has_touch || is_direct {
                is_touchscreen = true;
            }
        }
        let is_tablet_pad = is_tablet && has_pad_buttons;
        let is_mouse =
            !is_tablet && !is_touchpad && !is_joystick && has_mouse_button && (has_rel || !has_abs);
        // there is no such thing as an i2c mouse
        if is_mouse && self.bustype == BUS_I2C {
            is_pointing_stick = true;
        }
        if is_joystick {
            let well_known = if has_keys {
                WELL_KNOWN_KEYBOARD_KEYS
                    .iter()
                    .filter(|&&k| key.test(k))
                    .count()
            } else {
                0
            };
            if well_known >= 4 || joystick_buttons + joystick_axes < 2 {
                is_joystick = false;
            }
        }
        for (set, name) in [
            (is_pointing_stick, "ID_INPUT_POINTINGSTICK"),
            (is_mouse || is_abs_mouse, "ID_INPUT_MOUSE"),
            (is_touchpad, "ID_INPUT_TOUCHPAD"),
            (is_touchscreen, "ID_INPUT_TOUCHSCREEN"),
            (is_joystick, "ID_INPUT_JOYSTICK"),
            (is_tablet, "ID_INPUT_TABLET"),
            (is_tablet_pad, "ID_INPUT_TABLET_PAD"),
        ] {
            if set {
                props.push(name, b"1");
            }
        }
        is_tablet
            || is_mouse
            || is_abs_mouse
            || is_touchpad
            || is_touchscreen
            || is_joystick
            || is_pointing_stick
    }

    /// Key-like devices (udev's `test_key`): sets `ID_INPUT_KEY` and
    /// `ID_INPUT_KEYBOARD`; true if either.
    fn keys(&self, props: &mut Properties) -> bool {
        if !self.ev.test(EV_KEY) {
            return false;
        }
        // KEY_* only, not BTN_*, then the two high key ranges
        let found = (0..BTN_MISC).any(|b| self.key.test(b))
            || (KEY_OK..BTN_DPAD_UP).any(|b| self.key.test(b))
            || (KEY_ALS_TOGGLE..BTN_TRIGGER_HAPPY1).any(|b| self.key.test(b));
        if found {
            props.push("ID_INPUT_KEY", b"1");
        }
        // ESC, the digits and Q..D: a full keyboard (not KEY_RESERVED)
        if (1..32).all(|b| self.key.test(b)) {
            props.push("ID_INPUT_KEYBOARD", b"1");
            return true;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeSysfs;
    use super::*;

    const DEV: &str = "/devices/virtual/input/input9";

    fn device(caps: &[(&str, &str)]) -> FakeSysfs {
        let mut s = FakeSysfs::default();
        s.file(&format!("{DEV}/uevent"), b"PRODUCT=3/46d/c52b/111\n")
            .link(&format!("{DEV}/subsystem"), "/class/input")
            .file(
                &format!("{DEV}/event9/uevent"),
                b"MAJOR=13\nMINOR=73\nDEVNAME=input/event9\n",
            )
            .link(&format!("{DEV}/event9/subsystem"), "/class/input");
        for (k, v) in caps {
            s.file(&format!("{DEV}/{k}"), format!("{v}\n").as_bytes());
        }
        s
    }

    fn keys(p: &Properties) -> Vec<&'static str> {
        p.iter().map(|(k, _)| k).collect()
    }

    // a full USB keyboard (the QEMU usb-kbd of tests/corpus/sysfs/x86_64)
    // as a 64-bit kernel prints it, and the same bits from a 32-bit one
    const KBD_KEY: &str = if WORD == 64 {
        "1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe"
    } else {
        "10000 7 ff9f207a c14057ff febeffdf ffefffff ffffffff fffffffe"
    };

    #[test]
    fn keyboard_from_its_event_node() {
        let s = device(&[
            ("capabilities/ev", "120013"),
            ("capabilities/key", KBD_KEY),
            ("capabilities/abs", "0"),
            ("capabilities/rel", "0"),
            ("properties", "0"),
        ]);
        let p = input_id(&s, &format!("{DEV}/event9")).unwrap();
        assert_eq!(keys(&p), ["ID_INPUT", "ID_INPUT_KEY", "ID_INPUT_KEYBOARD"]);
    }

    #[test]
    fn mouse_and_wheel() {
        // BTN_LEFT/RIGHT/MIDDLE (0x110..0x112), REL_X/Y/WHEEL
        let key = if WORD == 64 {
            "70000 0 0 0 0"
        } else {
            "70000 0 0 0 0 0 0 0 0"
        };
        let s = device(&[
            ("capabilities/ev", "17"),
            ("capabilities/key", key),
            ("capabilities/rel", "103"),
        ]);
        let p = input_id(&s, DEV).unwrap();
        assert_eq!(keys(&p), ["ID_INPUT", "ID_INPUT_MOUSE"]);
        // a wheel alone is a key device
        let s = device(&[("capabilities/ev", "5"), ("capabilities/rel", "100")]);
        assert_eq!(
            keys(&input_id(&s, DEV).unwrap()),
            ["ID_INPUT", "ID_INPUT_KEY"]
        );
    }

    #[test]
    fn touchscreen_tablet_accelerometer_switch() {
        // ABS_X/Y + BTN_TOUCH + INPUT_PROP_DIRECT
        let touch_key = if WORD == 64 {
            "400 0 0 0 0 0"
        } else {
            "400 0 0 0 0 0 0 0 0 0 0"
        };
        let s = device(&[
            ("capabilities/ev", "b"),
            ("capabilities/key", touch_key),
            ("capabilities/abs", "3"),
            ("properties", "2"),
        ]);
        assert_eq!(
            keys(&input_id(&s, DEV).unwrap()),
            ["ID_INPUT", "ID_INPUT_TOUCHSCREEN"]
        );
        // X/Y/Z and no keys
        let s = device(&[("capabilities/ev", "9"), ("capabilities/abs", "7")]);
        assert_eq!(
            keys(&input_id(&s, DEV).unwrap()),
            ["ID_INPUT", "ID_INPUT_ACCELEROMETER"]
        );
        // a lid switch
        let s = device(&[("capabilities/ev", "21")]);
        assert_eq!(
            keys(&input_id(&s, DEV).unwrap()),
            ["ID_INPUT", "ID_INPUT_SWITCH"]
        );
    }

    #[test]
    fn joystick_unless_it_looks_like_a_keyboard() {
        // ABS_X/Y/RX/RY, BTN_TRIGGER..BTN_THUMB2 (0x120..0x124)
        let btn = if WORD == 64 {
            "1f00000000 0 0 0 0"
        } else {
            "1f 0 0 0 0 0 0 0 0 0"
        };
        let s = device(&[
            ("capabilities/ev", "b"),
            ("capabilities/key", btn),
            ("capabilities/abs", "1b"),
        ]);
        assert_eq!(
            keys(&input_id(&s, DEV).unwrap()),
            ["ID_INPUT", "ID_INPUT_JOYSTICK"]
        );
        // one joystick button and no axis: not a joystick
        let btn = if WORD == 64 {
            "100000000 0 0 0 0"
        } else {
            "1 0 0 0 0 0 0 0 0 0"
        };
        let s = device(&[("capabilities/ev", "3"), ("capabilities/key", btn)]);
        assert_eq!(keys(&input_id(&s, DEV).unwrap()), ["ID_INPUT"]);
    }

    #[test]
    fn no_input_parent_sets_nothing() {
        let mut s = FakeSysfs::default();
        s.file("/devices/virtual/tty/tty1/uevent", b"DEVNAME=tty1\n")
            .link("/devices/virtual/tty/tty1/subsystem", "/class/tty");
        assert!(input_id(&s, "/devices/virtual/tty/tty1")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn hex_words_as_strtoul_reads_them() {
        assert_eq!(parse_hex_word(b"120013", 32), Some(0x120013));
        assert_eq!(parse_hex_word(b" 0x1f", 32), Some(0x1f));
        assert_eq!(parse_hex_word(b"+a", 32), Some(10));
        assert_eq!(parse_hex_word(b"-0", 32), Some(0));
        assert_eq!(parse_hex_word(b"-1", 32), None);
        assert_eq!(parse_hex_word(b"", 32), None);
        assert_eq!(parse_hex_word(b"12g", 32), None);
        assert_eq!(parse_hex_word(&[b'f'; 9], 32), None);
        assert_eq!(parse_hex_word(&[b'f'; 16], 64), Some(u64::MAX));
        assert_eq!(parse_hex_word(&[b'f'; 17], 64), None);
        // an empty word (two spaces) still takes its index
        let mut b = Bits::sized(KEY_MAX);
        b.fill(b"1  0", WORD as u32);
        assert!(b.test(2 * WORD));
        assert!(!b.test(0) && !b.test(WORD));
    }

    #[test]
    fn a_32_bit_build_reads_a_64_bit_writers_words_as_64_bit() {
        // what a 64-bit kernel prints for a USB keyboard's keys (QEMU's)
        let key: &[u8] = b"1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe";
        assert_eq!(writer_width(&[b"120013", key]), 64);
        // a 32-bit writer's words never have more than 8 digits
        let expected = if WORD == 64 { 64 } else { 32 };
        assert_eq!(writer_width(&[b"120013", b"7 ff9f207a c14057ff"]), expected);
        let mut b = Bits::sized(KEY_MAX);
        b.fill(key, 64);
        // KEY_ESC (1) .. KEY_D (32): the keyboard heuristic's keys
        assert!((1..32).all(|k| b.test(k)));
        assert!(!b.test(0));
        // word 3 (bits 192..) = 0x1000000000007: bits 192, 193, 194, 240
        assert!(b.test(192) && b.test(194) && b.test(240) && !b.test(195));
    }
}
