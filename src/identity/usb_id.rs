//! udev's `usb_id` builtin: who made a USB device, what it is, its serial,
//! and which interface a node hangs off (the `ID_*` half of
//! `/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A12345-if00-port0`).
//!
//! The device: the node's nearest parent of subsystem `usb` and devtype
//! `usb_interface`, then that interface's parent `usb_device`; or, called
//! on a `usb_device` itself, that device (no interface properties then).
//!
//! - vendor / model: the USB `manufacturer` / `product` strings, or the
//!   hex IDs when a string is missing. For mass storage with subclass 6
//!   (SCSI) or 2 (ATAPI), the SCSI device's `vendor` / `model` / `rev` /
//!   `type` instead, and `ID_INSTANCE` = `target:lun`; if any SCSI read
//!   fails, what was read so far stays and the rest falls back to USB.
//! - `ID_VENDOR`, `ID_MODEL`, `ID_REVISION`: white space trimmed, inner
//!   runs → `_`, at most 63 bytes read, then every byte outside
//!   `[0-9A-Za-z#+-.:=@_]` (and not valid UTF-8 or a `\x`) → `_`.
//! - `*_ENC`: the raw string with `\xNN` escapes, at most 255 bytes.
//! - serial: dropped entirely if any byte is below 0x20, above 0x7f or a
//!   comma; else treated like the vendor (511 bytes). `ID_SERIAL` is
//!   `vendor_model[_serial][-instance]`, cut at 255 bytes.
//! - `ID_TYPE` from the interface class (`hid`, `storage`, `generic`, ...;
//!   mass storage: the subclass, then the SCSI type).
//! - `ID_USB_INTERFACES`: every distinct `:ccsspp` interface triple in the
//!   device's `descriptors`, in order, closed by `:`.
//!
//! Differences from udev 252 kept on purpose: when an `_ENC` value does
//! not fit udev's 256-byte buffer, udev prints its buffer's undefined
//! remains and we print the part that fitted; `descriptors` is read up
//! to [`MAX_USB_DESCRIPTORS`] bytes (udev: one `read()`, which on real
//! sysfs returns at most a page, so the same on 4 KiB-page kernels).

use super::text::{encode_devnode, parse_c_int, plain, scsi_address};
use super::{Dev, IdentityError, Properties, SysfsView};

/// How much of `descriptors` is read: one kernfs read on a kernel with
/// 4 KiB pages returns at most this, and so does udev's single `read()`.
pub const MAX_USB_DESCRIPTORS: usize = crate::limits::MAX_ATTR_LEN;

/// Bytes of a vendor, model or revision kept (udev's `char[64]` minus one).
const NAME_LEN: usize = 63;
/// Bytes of a serial kept (`UDEV_NAME_SIZE` 512 minus one).
const SERIAL_LEN: usize = 511;
/// Size of the `_ENC` buffers, NUL included.
const ENC_CAP: usize = 256;
/// Bytes of `ID_SERIAL` (a `char[256]` with its NUL).
const ID_SERIAL_LEN: usize = 255;

/// What `usb_id` gathers before it writes properties.
#[derive(Default)]
struct Found {
    vendor: Vec<u8>,
    vendor_enc: Vec<u8>,
    model: Vec<u8>,
    model_enc: Vec<u8>,
    revision: Vec<u8>,
    type_: Vec<u8>,
    instance: Vec<u8>,
    serial: Vec<u8>,
    interfaces: Vec<u8>,
    ifnum: Option<Vec<u8>>,
    driver: Option<Vec<u8>>,
}

/// udev's `usb_id` on the device at `devpath` (relative to the sysfs root,
/// `/devices/...`). `id_bus_set`: the event already has `ID_BUS` (set by
/// an earlier rule or builtin): then only the `ID_USB_*` properties are
/// set, as udev does.
pub fn usb_id<V: SysfsView + ?Sized>(
    view: &V,
    devpath: &str,
    id_bus_set: bool,
) -> Result<Properties, IdentityError> {
    let dev = Dev::new(view, devpath).ok_or(IdentityError::NoDevice)?;
    let mut f = Found::default();
    let usb = if dev.devtype().as_deref() == Some("usb_device") {
        f.interfaces = packed_interfaces(&dev);
        dev
    } else {
        let iface = dev
            .parent_with("usb", Some("usb_interface"))
            .ok_or(IdentityError::NotUsb)?;
        f.ifnum = iface.attr("bInterfaceNumber");
        f.driver = iface.attr("driver");
        let class = iface
            .attr("bInterfaceClass")
            .ok_or(IdentityError::MissingAttr("bInterfaceClass"))?;
        let class = parse_c_int(&class, 16)
            .filter(|v| (0..=i64::from(u32::MAX)).contains(v))
            .ok_or(IdentityError::BadAttr("bInterfaceClass"))?;
        let mut protocol = 0;
        if class == 8 {
            if let Some(sub) = iface.attr("bInterfaceSubClass") {
                // safe_atoi: base 0, so "08" (octal) does not parse
                let n = parse_c_int(&sub, 0)
                    .filter(|v| i64::from(i32::MIN) <= *v && *v <= i64::from(i32::MAX))
                    .unwrap_or(0);
                f.type_ = mass_storage_type(n).into();
                protocol = n;
            }
        } else {
            f.type_ = interface_type(class).into();
        }
        let usb = iface
            .parent_with("usb", Some("usb_device"))
            .ok_or(IdentityError::NotUsb)?;
        f.interfaces = packed_interfaces(&usb);
        if protocol == 6 || protocol == 2 {
            // Stops at the first read that fails; what it got stays.
            let _ = scsi_identity(&dev, &mut f);
        }
        usb
    };

    let vendor_id = usb
        .attr("idVendor")
        .ok_or(IdentityError::MissingAttr("idVendor"))?;
    let product_id = usb
        .attr("idProduct")
        .ok_or(IdentityError::MissingAttr("idProduct"))?;
    if f.vendor.is_empty() {
        let raw = usb
            .attr("manufacturer")
            .unwrap_or_else(|| vendor_id.clone());
        f.vendor_enc = encode_devnode(&raw, ENC_CAP).0;
        f.vendor = plain(&raw, NAME_LEN);
    }
    if f.model.is_empty() {
        let raw = usb.attr("product").unwrap_or_else(|| product_id.clone());
        f.model_enc = encode_devnode(&raw, ENC_CAP).0;
        f.model = plain(&raw, NAME_LEN);
    }
    if f.revision.is_empty() {
        if let Some(raw) = usb.attr("bcdDevice") {
            f.revision = plain(&raw, NAME_LEN);
        }
    }
    if f.serial.is_empty() {
        if let Some(raw) = usb.attr("serial") {
            // Microsoft's rule for USB serials: printable ASCII, no comma
            if raw.iter().all(|&b| (0x20..=0x7f).contains(&b) && b != b',') {
                f.serial = plain(&raw, SERIAL_LEN);
            }
        }
    }

    let mut serial = Vec::with_capacity(ID_SERIAL_LEN);
    serial.extend_from_slice(&f.vendor);
    serial.push(b'_');
    serial.extend_from_slice(&f.model);
    if !f.serial.is_empty() {
        serial.push(b'_');
        serial.extend_from_slice(&f.serial);
    }
    if !f.instance.is_empty() {
        serial.push(b'-');
        serial.extend_from_slice(&f.instance);
    }
    serial.truncate(ID_SERIAL_LEN);

    let mut p = Properties::new();
    if !id_bus_set {
        p.push("ID_BUS", b"usb");
        p.push("ID_MODEL", &f.model);
        p.push("ID_MODEL_ENC", &f.model_enc);
        p.push("ID_MODEL_ID", &product_id);
        p.push("ID_SERIAL", &serial);
        if !f.serial.is_empty() {
            p.push("ID_SERIAL_SHORT", &f.serial);
        }
        p.push("ID_VENDOR", &f.vendor);
        p.push("ID_VENDOR_ENC", &f.vendor_enc);
        p.push("ID_VENDOR_ID", &vendor_id);
        p.push("ID_REVISION", &f.revision);
        if !f.type_.is_empty() {
            p.push("ID_TYPE", &f.type_);
        }
        if !f.instance.is_empty() {
            p.push("ID_INSTANCE", &f.instance);
        }
    }
    p.push("ID_USB_MODEL", &f.model);
    p.push("ID_USB_MODEL_ENC", &f.model_enc);
    p.push("ID_USB_MODEL_ID", &product_id);
    p.push("ID_USB_SERIAL", &serial);
    if !f.serial.is_empty() {
        p.push("ID_USB_SERIAL_SHORT", &f.serial);
    }
    p.push("ID_USB_VENDOR", &f.vendor);
    p.push("ID_USB_VENDOR_ENC", &f.vendor_enc);
    p.push("ID_USB_VENDOR_ID", &vendor_id);
    p.push("ID_USB_REVISION", &f.revision);
    if !f.type_.is_empty() {
        p.push("ID_USB_TYPE", &f.type_);
    }
    if !f.instance.is_empty() {
        p.push("ID_USB_INSTANCE", &f.instance);
    }
    if !f.interfaces.is_empty() {
        p.push("ID_USB_INTERFACES", &f.interfaces);
    }
    if let Some(n) = &f.ifnum {
        p.push("ID_USB_INTERFACE_NUM", n);
    }
    if let Some(d) = &f.driver {
        p.push("ID_USB_DRIVER", d);
    }
    Ok(p)
}

/// The SCSI half of mass storage: vendor, model, type, revision and
/// instance from the node's `scsi_device` parent. `None` at the first
/// thing missing (udev's `goto fallback`), keeping what was set.
fn scsi_identity<V: SysfsView + ?Sized>(dev: &Dev<'_, V>, f: &mut Found) -> Option<()> {
    let scsi = dev.parent_with("scsi", Some("scsi_device"))?;
    let [_host, _bus, target, lun] = scsi_address(scsi.sysname().as_bytes())?;
    let vendor = scsi.attr("vendor")?;
    f.vendor_enc = encode_devnode(&vendor, ENC_CAP).0;
    f.vendor = plain(&vendor, NAME_LEN);
    let model = scsi.attr("model")?;
    f.model_enc = encode_devnode(&model, ENC_CAP).0;
    f.model = plain(&model, NAME_LEN);
    let type_ = scsi.attr("type")?;
    f.type_ = scsi_type(&type_).into();
    let rev = scsi.attr("rev")?;
    f.revision = plain(&rev, NAME_LEN);
    f.instance = format!("{target}:{lun}").into_bytes();
    Some(())
}

/// `ID_TYPE` from an interface class other than mass storage.
fn interface_type(class: i64) -> &'static str {
    match class {
        1 => "audio",
        3 => "hid",
        6 => "media",
        7 => "printer",
        8 => "storage",
        9 => "hub",
        0x0e => "video",
        _ => "generic",
    }
}

/// `ID_TYPE` from a mass-storage interface's subclass.
fn mass_storage_type(subclass: i64) -> &'static str {
    match subclass {
        1 => "rbc",
        2 => "atapi",
        3 => "tape",
        4 => "floppy",
        6 => "scsi",
        _ => "generic",
    }
}

/// `ID_TYPE` from a SCSI device's `type` (peripheral device type).
fn scsi_type(raw: &[u8]) -> &'static str {
    match parse_c_int(raw, 0) {
        Some(0 | 0xe) => "disk",
        Some(1) => "tape",
        Some(4 | 7 | 0xf) => "optical",
        Some(5) => "cd",
        _ => "generic",
    }
}

/// `ID_USB_INTERFACES` from the device's `descriptors`: `:ccsspp` for
/// each interface descriptor, each distinct triple once, then `:`. Empty
/// if the file is missing or shorter than a device descriptor (18 bytes).
/// A descriptor whose length runs past the data stops the walk, and then
/// (as udev does) the closing `:` is not added.
fn packed_interfaces<V: SysfsView + ?Sized>(usb: &Dev<'_, V>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_USB_DESCRIPTORS];
    let size = match usb.view.read_attr(&usb.devpath, "descriptors", &mut buf) {
        Some(n) if n >= 18 => n,
        _ => return Vec::new(),
    };
    // udev keeps the text in a 512-byte buffer and stops before a piece
    // that might not fit with the closing ':' and NUL.
    const CAP: usize = 512;
    const IFACE_DESC_LEN: usize = 9;
    const USB_DT_INTERFACE: u8 = 4;
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 0;
    while pos + IFACE_DESC_LEN < size && out.len() + 7 < CAP - 2 {
        let len = usize::from(buf[pos]);
        if len < 3 {
            break;
        }
        if len > size - IFACE_DESC_LEN {
            return out; // "corrupt": udev returns without the closing ':'
        }
        let d = &buf[pos..pos + IFACE_DESC_LEN];
        pos += len;
        if d[1] != USB_DT_INTERFACE {
            continue;
        }
        let piece = format!(":{:02x}{:02x}{:02x}", d[5], d[6], d[7]);
        if out.windows(7).any(|w| w == piece.as_bytes()) {
            continue;
        }
        out.extend_from_slice(piece.as_bytes());
    }
    if !out.is_empty() {
        out.push(b':');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeSysfs;
    use super::*;

    const DEV: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-3";

    /// A CH340-like adapter: no serial, strings with spaces.
    fn ch340(serial: Option<&[u8]>) -> FakeSysfs {
        let mut s = FakeSysfs::default();
        s.file(&format!("{DEV}/uevent"), b"DEVTYPE=usb_device\n")
            .link(&format!("{DEV}/subsystem"), "/bus/usb")
            .file(&format!("{DEV}/idVendor"), b"1a86\n")
            .file(&format!("{DEV}/idProduct"), b"7523\n")
            .file(&format!("{DEV}/bcdDevice"), b"0264\n")
            .file(&format!("{DEV}/product"), b"USB2.0-Serial\n");
        let i = format!("{DEV}/1-3:1.0");
        s.file(&format!("{i}/uevent"), b"DEVTYPE=usb_interface\n")
            .link(&format!("{i}/subsystem"), "/bus/usb")
            .link(&format!("{i}/driver"), "/bus/usb-serial/drivers/ch341-uart")
            .file(&format!("{i}/bInterfaceNumber"), b"00\n")
            .file(&format!("{i}/bInterfaceClass"), b"ff\n");
        s.file(&format!("{i}/ttyUSB0/uevent"), b"")
            .link(&format!("{i}/ttyUSB0/subsystem"), "/bus/usb-serial")
            .file(&format!("{i}/ttyUSB0/tty/ttyUSB0/uevent"), b"MAJOR=188\n")
            .link(&format!("{i}/ttyUSB0/tty/ttyUSB0/subsystem"), "/class/tty");
        if let Some(v) = serial {
            s.file(&format!("{DEV}/serial"), v);
        }
        s
    }

    #[test]
    fn no_serial_no_manufacturer() {
        let s = ch340(None);
        let p = usb_id(&s, &format!("{DEV}/1-3:1.0/ttyUSB0/tty/ttyUSB0"), false).unwrap();
        assert_eq!(p.get("ID_VENDOR"), Some(&b"1a86"[..]));
        assert_eq!(p.get("ID_MODEL"), Some(&b"USB2.0-Serial"[..]));
        assert_eq!(p.get("ID_SERIAL"), Some(&b"1a86_USB2.0-Serial"[..]));
        assert_eq!(p.get("ID_SERIAL_SHORT"), None);
        assert_eq!(p.get("ID_USB_DRIVER"), Some(&b"ch341-uart"[..]));
        assert_eq!(p.get("ID_TYPE"), Some(&b"generic"[..]));
        assert_eq!(p.get("ID_USB_INTERFACES"), None); // no descriptors file
        assert_eq!(p.len(), 21);
    }

    #[test]
    fn serial_with_a_space_or_bang() {
        let s = ch340(Some(b" A1 B!2 \n"));
        let p = usb_id(&s, &format!("{DEV}/1-3:1.0/ttyUSB0"), false).unwrap();
        assert_eq!(p.get("ID_SERIAL_SHORT"), Some(&b"A1_B_2"[..]));
        assert_eq!(p.get("ID_SERIAL"), Some(&b"1a86_USB2.0-Serial_A1_B_2"[..]));
    }

    #[test]
    fn serial_with_a_comma_or_high_byte_is_dropped() {
        for bad in [&b"A,1"[..], b"A\xc3\xa91", b"A\x011"] {
            let s = ch340(Some(bad));
            let p = usb_id(&s, &format!("{DEV}/1-3:1.0/ttyUSB0"), false).unwrap();
            assert_eq!(p.get("ID_SERIAL_SHORT"), None);
            assert_eq!(p.get("ID_SERIAL"), Some(&b"1a86_USB2.0-Serial"[..]));
        }
    }

    #[test]
    fn id_bus_already_set_keeps_only_usb_copies() {
        let s = ch340(None);
        let p = usb_id(&s, &format!("{DEV}/1-3:1.0/ttyUSB0"), true).unwrap();
        assert!(p.iter().all(|(k, _)| k.starts_with("ID_USB_")));
    }

    #[test]
    fn an_interface_itself_is_not_identified() {
        // udev looks for the interface among the parents only
        let s = ch340(None);
        assert_eq!(
            usb_id(&s, &format!("{DEV}/1-3:1.0"), false),
            Err(IdentityError::NotUsb)
        );
    }

    #[test]
    fn not_usb() {
        let mut s = FakeSysfs::default();
        s.file("/devices/platform/serial8250/tty/ttyS0/uevent", b"")
            .file("/devices/platform/serial8250/uevent", b"");
        assert_eq!(
            usb_id(&s, "/devices/platform/serial8250/tty/ttyS0", false),
            Err(IdentityError::NotUsb)
        );
    }

    #[test]
    fn interfaces_from_descriptors() {
        let mut s = ch340(None);
        let mut d = vec![18u8, 1];
        d.resize(18, 0);
        d.extend_from_slice(&[9, 2, 0, 0, 2, 1, 0, 0x80, 50]); // config
        d.extend_from_slice(&[9, 4, 0, 0, 1, 0x02, 0x02, 0x01, 0]); // CDC ACM
        d.extend_from_slice(&[7, 5, 0x81, 3, 8, 0, 10]); // endpoint
        d.extend_from_slice(&[9, 4, 1, 0, 2, 0x0a, 0x00, 0x00, 0]); // CDC data
        d.extend_from_slice(&[9, 4, 2, 0, 2, 0x0a, 0x00, 0x00, 0]); // same triple
        d.extend_from_slice(&[7, 5, 0x82, 2, 64, 0, 0]);
        s.file(&format!("{DEV}/descriptors"), &d);
        let p = usb_id(&s, DEV, false).unwrap();
        assert_eq!(p.get("ID_USB_INTERFACES"), Some(&b":020201:0a0000:"[..]));
        assert_eq!(p.get("ID_TYPE"), None); // the device itself: no interface
        assert_eq!(p.get("ID_USB_INTERFACE_NUM"), None);
    }
}
