//! A typed view of a USB uevent: vendor, product, release, classes, bus
//! address, and whether the event is about a device or one of its
//! interfaces. Pure; built from the event alone, so it works on `remove`
//! events too, when the device's sysfs directory is already gone.
//!
//! Kernel: `drivers/usb/core/driver.c` (`usb_uevent`) and
//! `drivers/usb/core/message.c` (`usb_if_uevent`) write, for `SUBSYSTEM=usb`:
//! - `PRODUCT=%x/%x/%x`: idVendor/idProduct/bcdDevice, hex without padding
//!   (`403/6001/600`);
//! - `TYPE=%d/%d/%d`: bDeviceClass/SubClass/Protocol, decimal;
//! - `INTERFACE=%d/%d/%d` (interfaces only): bInterfaceClass/SubClass/Protocol;
//! - `BUSNUM=%03d`, `DEVNUM=%03d` (devices only), `DEVTYPE=usb_device` or
//!   `usb_interface`.
//!
//! [`UsbView::field`] renders fields the way sysfs writes the attribute of
//! the same name (`idVendor` = `0403`, `bInterfaceClass` = `02`, `busnum`
//! = `1`), so a rule can say `USB{idVendor}=="0403"` and mean what
//! `ATTRS{idVendor}=="0403"` means, without reading sysfs.

use core::fmt::Write;

use crate::uevent::Uevent;

/// Device or interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsbKind {
    /// `DEVTYPE=usb_device`: the device as a whole.
    Device,
    /// `DEVTYPE=usb_interface`: one interface of a device.
    Interface,
}

/// Class, subclass, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassTriple {
    /// bDeviceClass or bInterfaceClass.
    pub class: u8,
    /// bDeviceSubClass or bInterfaceSubClass.
    pub subclass: u8,
    /// bDeviceProtocol or bInterfaceProtocol.
    pub protocol: u8,
}

/// What a USB uevent says about the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsbView {
    /// Device or interface.
    pub kind: UsbKind,
    /// idVendor.
    pub vendor: u16,
    /// idProduct.
    pub product: u16,
    /// bcdDevice (the device's release number).
    pub bcd_device: u16,
    /// Device class, from `TYPE`, if present.
    pub device_class: Option<ClassTriple>,
    /// Interface class, from `INTERFACE` (interfaces only).
    pub interface_class: Option<ClassTriple>,
    /// Bus number, from `BUSNUM` (devices only).
    pub busnum: Option<u16>,
    /// Device number on the bus, from `DEVNUM` (devices only).
    pub devnum: Option<u16>,
}

/// The names [`UsbView::field`] knows, as accepted in `USB{name}`.
pub const FIELDS: [&str; 11] = [
    "idVendor",
    "idProduct",
    "bcdDevice",
    "bDeviceClass",
    "bDeviceSubClass",
    "bDeviceProtocol",
    "bInterfaceClass",
    "bInterfaceSubClass",
    "bInterfaceProtocol",
    "busnum",
    "devnum",
];

impl UsbView {
    /// The view of a `SUBSYSTEM=usb` event with a valid `PRODUCT` and a
    /// `DEVTYPE` of `usb_device` or `usb_interface`; `None` otherwise (for
    /// `usb_endpoint` events of old kernels, and every other subsystem).
    pub fn of(ev: &Uevent<'_>) -> Option<UsbView> {
        if ev.subsystem() != Some("usb") {
            return None;
        }
        let kind = match ev.get("DEVTYPE")? {
            b"usb_device" => UsbKind::Device,
            b"usb_interface" => UsbKind::Interface,
            _ => return None,
        };
        let mut p = ev.get("PRODUCT")?.split(|&b| b == b'/');
        let vendor = hex_u16(p.next()?)?;
        let product = hex_u16(p.next()?)?;
        let bcd_device = hex_u16(p.next()?)?;
        if p.next().is_some() {
            return None;
        }
        Some(UsbView {
            kind,
            vendor,
            product,
            bcd_device,
            device_class: ev.get("TYPE").and_then(triple),
            interface_class: ev.get("INTERFACE").and_then(triple),
            busnum: ev.get("BUSNUM").and_then(dec_u16),
            devnum: ev.get("DEVNUM").and_then(dec_u16),
        })
    }

    /// Renders field `name` (one of [`FIELDS`]) into `out` as sysfs would
    /// write the attribute of that name. Returns false if the event does not
    /// carry it (e.g. `bInterfaceClass` on a device event) or the name is
    /// unknown. Never allocates.
    pub fn field(&self, name: &str, out: &mut heapless::String<8>) -> bool {
        out.clear();
        let dc = self.device_class;
        let ic = self.interface_class;
        let r = match name {
            "idVendor" => write!(out, "{:04x}", self.vendor),
            "idProduct" => write!(out, "{:04x}", self.product),
            "bcdDevice" => write!(out, "{:04x}", self.bcd_device),
            "bDeviceClass" => return dc.is_some_and(|c| write!(out, "{:02x}", c.class).is_ok()),
            "bDeviceSubClass" => {
                return dc.is_some_and(|c| write!(out, "{:02x}", c.subclass).is_ok())
            }
            "bDeviceProtocol" => {
                return dc.is_some_and(|c| write!(out, "{:02x}", c.protocol).is_ok())
            }
            "bInterfaceClass" => return ic.is_some_and(|c| write!(out, "{:02x}", c.class).is_ok()),
            "bInterfaceSubClass" => {
                return ic.is_some_and(|c| write!(out, "{:02x}", c.subclass).is_ok())
            }
            "bInterfaceProtocol" => {
                return ic.is_some_and(|c| write!(out, "{:02x}", c.protocol).is_ok())
            }
            "busnum" => return self.busnum.is_some_and(|n| write!(out, "{n}").is_ok()),
            "devnum" => return self.devnum.is_some_and(|n| write!(out, "{n}").is_ok()),
            _ => return false,
        };
        r.is_ok()
    }
}

fn hex_u16(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    let mut n = 0u16;
    for &b in s {
        n = n * 16 + (b as char).to_digit(16)? as u16;
    }
    Some(n)
}

fn dec_u16(s: &[u8]) -> Option<u16> {
    let n = crate::uevent::parse_u64(s)?;
    u16::try_from(n).ok()
}

fn triple(s: &[u8]) -> Option<ClassTriple> {
    let mut p = s.split(|&b| b == b'/');
    let mut next = || -> Option<u8> { u8::try_from(crate::uevent::parse_u64(p.next()?)?).ok() };
    let t = ClassTriple {
        class: next()?,
        subclass: next()?,
        protocol: next()?,
    };
    if p.next().is_some() {
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(fields: &str) -> Vec<u8> {
        let mut d = b"add@/devices/pci0000:00/0000:00:02.0/usb1/1-2\0ACTION=add\0\
            DEVPATH=/devices/pci0000:00/0000:00:02.0/usb1/1-2\0"
            .to_vec();
        for f in fields.split(' ') {
            d.extend_from_slice(f.as_bytes());
            d.push(0);
        }
        d
    }

    fn field(v: &UsbView, name: &str) -> Option<String> {
        let mut s = heapless::String::new();
        v.field(name, &mut s).then(|| s.as_str().to_string())
    }

    #[test]
    fn ftdi_device_from_a_real_capture() {
        // qemu-usb-x86_64.jsonl: usb-serial (FTDI) usb_device add
        let d = ev(
            "SUBSYSTEM=usb MAJOR=189 MINOR=3 DEVNAME=bus/usb/001/004 DEVTYPE=usb_device \
                    PRODUCT=403/6001/400 TYPE=0/0/0 BUSNUM=001 DEVNUM=004 SEQNUM=7",
        );
        let v = UsbView::of(&Uevent::parse(&d).unwrap()).unwrap();
        assert_eq!(v.kind, UsbKind::Device);
        assert_eq!(
            (v.vendor, v.product, v.bcd_device),
            (0x0403, 0x6001, 0x0400)
        );
        assert_eq!(field(&v, "idVendor").as_deref(), Some("0403"));
        assert_eq!(field(&v, "idProduct").as_deref(), Some("6001"));
        assert_eq!(field(&v, "bcdDevice").as_deref(), Some("0400"));
        assert_eq!(field(&v, "bDeviceClass").as_deref(), Some("00"));
        assert_eq!(field(&v, "busnum").as_deref(), Some("1"));
        assert_eq!(field(&v, "devnum").as_deref(), Some("4"));
        assert_eq!(field(&v, "bInterfaceClass"), None);
        assert_eq!(field(&v, "nope"), None);
    }

    #[test]
    fn cdc_ether_interface() {
        let d = ev(
            "SUBSYSTEM=usb DEVTYPE=usb_interface PRODUCT=525/a4a2/101 TYPE=2/0/0 \
                    INTERFACE=2/6/0 MODALIAS=usb:v0525pA4A2d0101dc02dsc00dp00ic02isc06ip00in00",
        );
        let v = UsbView::of(&Uevent::parse(&d).unwrap()).unwrap();
        assert_eq!(v.kind, UsbKind::Interface);
        assert_eq!(field(&v, "bInterfaceClass").as_deref(), Some("02"));
        assert_eq!(field(&v, "bInterfaceSubClass").as_deref(), Some("06"));
        assert_eq!(field(&v, "bDeviceClass").as_deref(), Some("02"));
        assert_eq!(v.busnum, None);
    }

    #[test]
    fn not_usb_or_malformed_gives_none() {
        for f in [
            "SUBSYSTEM=net DEVTYPE=usb_device PRODUCT=1/2/3",
            "SUBSYSTEM=usb DEVTYPE=usb_endpoint PRODUCT=1/2/3",
            "SUBSYSTEM=usb DEVTYPE=usb_device",
            "SUBSYSTEM=usb DEVTYPE=usb_device PRODUCT=1/2",
            "SUBSYSTEM=usb DEVTYPE=usb_device PRODUCT=1/2/3/4",
            "SUBSYSTEM=usb DEVTYPE=usb_device PRODUCT=10000/2/3",
            "SUBSYSTEM=usb DEVTYPE=usb_device PRODUCT=g/2/3",
        ] {
            let d = ev(f);
            assert_eq!(UsbView::of(&Uevent::parse(&d).unwrap()), None, "{f}");
        }
        // a bad TYPE only loses the class
        let d = ev("SUBSYSTEM=usb DEVTYPE=usb_device PRODUCT=1/2/3 TYPE=300/0/0");
        let v = UsbView::of(&Uevent::parse(&d).unwrap()).unwrap();
        assert_eq!(v.device_class, None);
    }
}
