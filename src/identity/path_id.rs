//! udev's `path_id` builtin: where a device is attached, as a string that
//! stays the same across reboots as long as the hardware topology does
//! (`ID_PATH=pci-0000:00:14.0-usb-0:1.2:1.0`, the name in
//! `/dev/serial/by-path/` and `/dev/disk/by-path/`), and `ID_PATH_TAG`,
//! the same with every run of other characters turned into one `_`.
//!
//! Walking from the device up, each parent of a known subsystem puts a
//! piece in front: `usb-0:PORTS[:CONFIG.IFACE]` (the bus number is always
//! `0`), `pci-ADDR`, `platform-NAME`, `acpi-`, `xen-`, `scm-`, `ccw-`,
//! `ccwgroup-`, `iucv-`, `ap-`, `serio-N`, `cs-N` (spi), `bcma-N`,
//! `cciss-diskN`, `nvme-NSID`, `st*`/`nst*` tapes, and for SCSI disks the
//! transport: `ata-PORT.TARGET` (plus `ID_PATH_ATA_COMPAT`), `fc-`,
//! `sas-`, `ip-...-iscsi-`, `vmbus-`, `ieee1394-0x`, or the rebased
//! `scsi-H:B:T:L` (what a USB stick's disk gets). Consecutive parents of
//! one subsystem give one piece. No `ID_PATH` unless some parent is of a
//! kind udev trusts to be stable (pci, platform, acpi, xen, scm, ccw,
//! ccwgroup, ap, iucv, nvme, and the SCSI transports fc, sas, iscsi,
//! firewire); none for a block device without a known transport.
//!
//! udev 252 does not have `ID_PATH_WITH_USB_REVISION` (systemd 255 adds
//! it); it is not computed here.

use super::text::{parse_c_int, scsi_address};
use super::{Dev, EntryKind, IdentityError, Properties, SysfsView};

/// The tag buffer of udev (`UDEV_NAME_SIZE` 512, NUL included).
const TAG_LEN: usize = 511;

/// The string being composed, piece by piece from the device upwards.
#[derive(Default)]
struct Path(Option<Vec<u8>>);

impl Path {
    /// `path_prepend`: `pre` alone, or `pre-` in front of what is there.
    fn prepend(&mut self, pre: &[u8]) {
        self.0 = Some(match self.0.take() {
            None => pre.to_vec(),
            Some(old) => {
                let mut v = Vec::with_capacity(pre.len() + 1 + old.len());
                v.extend_from_slice(pre);
                v.push(b'-');
                v.extend_from_slice(&old);
                v
            }
        });
    }

    /// Prepends only if something is there already (the ATA compat path).
    fn prepend_if_set(&mut self, pre: &[u8]) {
        if self.0.is_some() {
            self.prepend(pre);
        }
    }
}

/// What the walk has learnt.
#[derive(Default)]
struct Walk {
    path: Path,
    compat: Path,
    supported_transport: bool,
    supported_parent: bool,
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// udev's `path_id` on the device at `devpath`: `ID_PATH`, `ID_PATH_TAG`
/// and, for ATA disks, `ID_PATH_ATA_COMPAT`.
pub fn path_id<V: SysfsView + ?Sized>(
    view: &V,
    devpath: &str,
) -> Result<Properties, IdentityError> {
    let dev = Dev::new(view, devpath).ok_or(IdentityError::NoDevice)?;
    let mut w = Walk::default();
    let mut cur = Some(dev.clone());
    // Each step goes up at least one directory: bounded by the depth.
    for _ in 0..devpath.len() {
        let Some(parent) = cur.take() else { break };
        let next = match parent.subsystem() {
            None => Some(parent),
            Some(subsys) => step(&dev, parent, &subsys, &mut w)?,
        };
        cur = match next {
            Some(p) => p.parent(),
            None => None,
        };
    }
    let Some(path) = w.path.0 else {
        return Err(IdentityError::NoPath);
    };
    if !w.supported_parent {
        return Err(IdentityError::NoPath);
    }
    if dev.subsystem().as_deref() == Some("block") && !w.supported_transport {
        return Err(IdentityError::NoPath);
    }
    let mut p = Properties::new();
    p.push("ID_PATH", &path);
    p.push("ID_PATH_TAG", &tag(&path));
    if let Some(c) = w.compat.0 {
        p.push("ID_PATH_ATA_COMPAT", &c);
    }
    Ok(p)
}

/// `ID_PATH_TAG`: letters, digits and `-` kept; any other run becomes one
/// `_`; none at the start or the end.
fn tag(path: &[u8]) -> Vec<u8> {
    let mut t: Vec<u8> = Vec::with_capacity(path.len());
    for &b in path {
        if t.len() >= TAG_LEN {
            break;
        }
        if b.is_ascii_alphanumeric() || b == b'-' {
            t.push(b);
        } else if !t.is_empty() && t.last() != Some(&b'_') {
            t.push(b'_');
        }
    }
    while t.last() == Some(&b'_') {
        t.pop();
    }
    t
}

/// One step of the walk at `parent` (subsystem `subsys`): the device to
/// continue from (its parent comes next), or `None` to stop.
fn step<'v, V: SysfsView + ?Sized>(
    dev: &Dev<'v, V>,
    parent: Dev<'v, V>,
    subsys: &str,
    w: &mut Walk,
) -> Result<Option<Dev<'v, V>>, IdentityError> {
    let sysname = parent.sysname();
    let simple = |w: &mut Walk, prefix: &str| {
        let piece = cat(&[prefix.as_bytes(), b"-", sysname.as_bytes()]);
        w.path.prepend(&piece);
        w.compat.prepend_if_set(&piece);
    };
    Ok(match subsys {
        "scsi_tape" => {
            scsi_tape(&parent, w);
            Some(parent)
        }
        "scsi" => {
            w.supported_transport = true;
            scsi(parent, w)
        }
        "cciss" => {
            w.supported_transport = true;
            cciss(parent, w)
        }
        "usb" => {
            w.supported_transport = true;
            Some(usb(parent, w))
        }
        "bcma" => {
            w.supported_transport = true;
            bcma(parent, w)
        }
        "serio" | "spi" => match parent.sysnum() {
            Some(n) => {
                let pre = if subsys == "serio" { "serio-" } else { "cs-" };
                w.path.prepend(&cat(&[pre.as_bytes(), n.as_bytes()]));
                Some(skip_subsystem(parent, subsys))
            }
            None => Some(parent),
        },
        "pci" | "acpi" | "xen" => {
            simple(w, subsys);
            w.supported_parent = true;
            Some(skip_subsystem(parent, subsys))
        }
        "platform" | "scm" | "ccw" | "ccwgroup" | "iucv" => {
            simple(w, subsys);
            w.supported_transport = true;
            w.supported_parent = true;
            Some(skip_subsystem(parent, subsys))
        }
        "virtio" => {
            w.supported_transport = true;
            Some(skip_subsystem(parent, subsys))
        }
        "ap" => {
            let piece = match (parent.attr("type"), parent.attr("ap_functions")) {
                (Some(t), Some(f)) => cat(&[b"ap-", &t, b"-", &f]),
                _ => cat(&[b"ap-", sysname.as_bytes()]),
            };
            w.path.prepend(&piece);
            w.supported_transport = true;
            w.supported_parent = true;
            Some(skip_subsystem(parent, "ap"))
        }
        "nvme" | "nvme-subsystem" => match dev.attr("nsid") {
            Some(nsid) => {
                let piece = cat(&[b"nvme-", &nsid]);
                w.path.prepend(&piece);
                w.compat.prepend_if_set(&piece);
                let base = if subsys == "nvme-subsystem" {
                    real_nvme_parent(dev).ok_or(IdentityError::Unresolved)?
                } else {
                    parent
                };
                w.supported_parent = true;
                w.supported_transport = true;
                Some(skip_subsystem(base, "nvme"))
            }
            None => Some(parent),
        },
        _ => Some(parent),
    })
}

/// The last device of the run of ancestors (from `dev` up) that share
/// subsystem `subsys` (udev's `skip_subsystem`).
fn skip_subsystem<'v, V: SysfsView + ?Sized>(dev: Dev<'v, V>, subsys: &str) -> Dev<'v, V> {
    let mut last = dev.clone();
    let mut cur = Some(dev);
    while let Some(d) = cur {
        if d.subsystem().as_deref() != Some(subsys) {
            break;
        }
        cur = d.parent();
        last = d;
    }
    last
}

/// `usb-0:` and the part of the name after the first `-` (`1.2:1.0`), for
/// USB devices and interfaces; root hubs (`usb1`) add nothing.
fn usb<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Dev<'v, V> {
    if !matches!(
        parent.devtype().as_deref(),
        Some("usb_interface" | "usb_device")
    ) {
        return parent;
    }
    let name = parent.sysname();
    let Some((_, port)) = name.split_once('-') else {
        return parent;
    };
    w.path.prepend(&cat(&[b"usb-0:", port.as_bytes()]));
    skip_subsystem(parent, "usb")
}

fn scsi_tape<V: SysfsView + ?Sized>(dev: &Dev<'_, V>, w: &mut Walk) {
    if w.path.0.is_some() {
        return;
    }
    let name = dev.sysname();
    let b = name.as_bytes();
    // strchr("lma", c) also matches the terminating NUL: "nst" alone counts
    let mode = |i: usize| match b.get(i) {
        None => Some(&b""[..]),
        Some(c @ (b'l' | b'm' | b'a')) => Some(core::slice::from_ref(c)),
        _ => None,
    };
    if let (true, Some(m)) = (name.starts_with("nst"), mode(3)) {
        w.path.prepend(&cat(&[b"nst", m]));
    } else if let (true, Some(m)) = (name.starts_with("st"), mode(2)) {
        w.path.prepend(&cat(&[b"st", m]));
    }
}

fn cciss<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    // sscanf("c%ud%u")
    let name = parent.sysname();
    let rest = name.strip_prefix('c')?;
    let (_controller, rest) = leading_uint(rest)?;
    let (disk, _) = leading_uint(rest.strip_prefix('d')?)?;
    w.path.prepend(format!("cciss-disk{disk}").as_bytes());
    Some(skip_subsystem(parent, "cciss"))
}

fn bcma<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    // sscanf("bcma%*u:%u")
    let name = parent.sysname();
    let (_, rest) = leading_uint(name.strip_prefix("bcma")?)?;
    let (core, _) = leading_uint(rest.strip_prefix(':')?)?;
    w.path.prepend(format!("bcma-{core}").as_bytes());
    Some(parent)
}

/// A leading unsigned decimal, as `%u` reads it (digits only here).
fn leading_uint(s: &str) -> Option<(u32, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    let v = s[..n].parse::<u64>().ok()?;
    Some((v as u32, &s[n..]))
}

/// `lun-N` for the SCSI device (its sysnum), or udev's wide form for LUNs
/// of 256 and above; `(null)` where udev prints a NULL string.
fn lun<V: SysfsView + ?Sized>(dev: &Dev<'_, V>) -> Vec<u8> {
    let n = dev
        .sysnum()
        .and_then(|s| parse_c_int(s.as_bytes(), 10))
        .and_then(|v| u64::try_from(v).ok());
    match n {
        Some(l) if l < 256 => format!("lun-{l}").into_bytes(),
        Some(l) => {
            format!("lun-0x{:04x}{:04x}00000000", l & 0xffff, (l >> 16) & 0xffff).into_bytes()
        }
        None => b"(null)".to_vec(),
    }
}

fn scsi<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    if parent.devtype().as_deref() != Some("scsi_device") {
        return Some(parent);
    }
    if let Some(id) = parent.attr("ieee1394_id") {
        w.path.prepend(&cat(&[b"ieee1394-0x", &id]));
        w.supported_parent = true;
        return Some(skip_subsystem(parent, "scsi"));
    }
    let name = parent.devpath.clone();
    if name.contains("/rport-") {
        w.supported_parent = true;
        return scsi_fc(parent, w);
    }
    if name.contains("/end_device-") {
        w.supported_parent = true;
        return scsi_sas(parent, w);
    }
    if name.contains("/session") {
        w.supported_parent = true;
        return scsi_iscsi(parent, w);
    }
    if name.contains("/ata") {
        return scsi_ata(parent, w);
    }
    if name.contains("/vmbus_") {
        return scsi_hyperv(parent, w, 37);
    }
    if name.contains("/VMBUS") {
        return scsi_hyperv(parent, w, 38);
    }
    scsi_default(parent, w)
}

fn scsi_fc<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    let target = parent.parent_with("scsi", Some("scsi_target"))?;
    let fc = Dev::from_subsystem_sysname(parent.view, "fc_transport", &target.sysname())?;
    let port = fc.attr("port_name")?;
    w.path.prepend(&cat(&[b"fc-", &port, b"-", &lun(&parent)]));
    Some(parent)
}

fn scsi_sas_wide_port<'v, V: SysfsView + ?Sized>(
    parent: Dev<'v, V>,
    w: &mut Walk,
) -> Option<Dev<'v, V>> {
    let target = parent.parent_with("scsi", Some("scsi_target"))?;
    let target_parent = target.parent()?;
    let sas = Dev::from_subsystem_sysname(parent.view, "sas_device", &target_parent.sysname())?;
    let addr = sas.attr("sas_address")?;
    w.path.prepend(&cat(&[b"sas-", &addr, b"-", &lun(&parent)]));
    Some(parent)
}

fn scsi_sas<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    let view = parent.view;
    let target = parent.parent_with("scsi", Some("scsi_target"))?;
    let target_parent = target.parent()?;
    let target_sas = Dev::from_subsystem_sysname(view, "sas_device", &target_parent.sysname())?;
    let port = target_parent.parent()?;
    let port_sas = Dev::from_subsystem_sysname(view, "sas_port", &port.sysname())?;
    let phys = port_sas.attr("num_phys")?;
    if phys != b"1" {
        return scsi_sas_wide_port(parent, w);
    }
    let phy = target_sas.attr("phy_identifier")?;
    let expander = port.parent()?;
    let exp_addr = match Dev::from_subsystem_sysname(view, "sas_device", &expander.sysname()) {
        Some(e) => Some(e.attr("sas_address")?),
        None => None,
    };
    let l = lun(&parent);
    let piece = match exp_addr {
        Some(a) => cat(&[b"sas-exp", &a, b"-phy", &phy, b"-", &l]),
        None => cat(&[b"sas-phy", &phy, b"-", &l]),
    };
    w.path.prepend(&piece);
    Some(parent)
}

fn scsi_iscsi<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    let view = parent.view;
    let mut transport = parent.clone();
    let session_name = loop {
        transport = transport.parent()?;
        let n = transport.sysname();
        if n.starts_with("session") {
            break n;
        }
    };
    let session = Dev::from_subsystem_sysname(view, "iscsi_session", &session_name)?;
    let target = session.attr("targetname")?;
    let num = transport.sysnum()?;
    let conn =
        Dev::from_subsystem_sysname(view, "iscsi_connection", &format!("connection{num}:0"))?;
    let addr = conn.attr("persistent_address")?;
    let port = conn.attr("persistent_port")?;
    let piece = cat(&[
        b"ip-",
        &addr,
        b":",
        &port,
        b"-iscsi-",
        &target,
        b"-",
        &lun(&parent),
    ]);
    w.path.prepend(&piece);
    Some(parent)
}

fn scsi_ata<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    let [_host, bus, target, _lun] = scsi_address(parent.sysname().as_bytes())?;
    let host = parent.parent_with("scsi", Some("scsi_host"))?;
    let host_parent = host.parent()?;
    let ata = Dev::from_subsystem_sysname(parent.view, "ata_port", &host_parent.sysname())?;
    let port_no = ata.attr("port_no")?;
    // %u of the values sscanf read with %u
    let (bus, target) = (bus as u32, target as u32);
    let piece = if bus != 0 {
        cat(&[b"ata-", &port_no, format!(".{bus}.0").as_bytes()])
    } else {
        cat(&[b"ata-", &port_no, format!(".{target}").as_bytes()])
    };
    w.path.prepend(&piece);
    w.compat.prepend(&cat(&[b"ata-", &port_no]));
    Some(parent)
}

fn scsi_default<'v, V: SysfsView + ?Sized>(parent: Dev<'v, V>, w: &mut Walk) -> Option<Dev<'v, V>> {
    let host_dev = parent.parent_with("scsi", Some("scsi_host"))?;
    let [host, bus, target, lun] = scsi_address(parent.sysname().as_bytes())?;
    // udev rebases the host number on the lowest hostN next to this host
    // (its own comment calls this racy; it is what the names are built on)
    let base = &host_dev.devpath[..host_dev.devpath.rfind('/')?];
    let mut basenum: i64 = -1;
    parent.view.for_each_entry(base, &mut |name, kind| {
        if name.starts_with('.') || kind == EntryKind::File {
            return;
        }
        let Some(num) = name.strip_prefix("host") else {
            return;
        };
        let Some(i) =
            parse_c_int(num.as_bytes(), 10).filter(|v| (0..=i64::from(u32::MAX)).contains(v))
        else {
            return;
        };
        // udev compares (int) i < basenum
        let i = i64::from(i as u32 as i32);
        if basenum == -1 || i < basenum {
            basenum = i;
        }
    });
    if basenum == -1 {
        return Some(host_dev);
    }
    let host = (i64::from(host) - basenum) as i32;
    w.path
        .prepend(format!("scsi-{host}:{bus}:{target}:{lun}").as_bytes());
    Some(host_dev)
}

fn scsi_hyperv<'v, V: SysfsView + ?Sized>(
    parent: Dev<'v, V>,
    w: &mut Walk,
    guid_len: usize,
) -> Option<Dev<'v, V>> {
    let host = parent.parent_with("scsi", Some("scsi_host"))?;
    let vmbus = host.parent()?;
    let g = vmbus.attr("device_id")?;
    if g.len() < guid_len || g[0] != b'{' || g[guid_len - 1] != b'}' {
        return None;
    }
    let guid: Vec<u8> = g[1..guid_len - 1]
        .iter()
        .copied()
        .filter(|&b| b != b'-')
        .collect();
    w.path
        .prepend(&cat(&[b"vmbus-", &guid, b"-", &lun(&parent)]));
    Some(parent)
}

/// With NVMe multipathing, a namespace lives under
/// `/devices/virtual/nvme-subsystem/`; its path comes from the controller
/// `nvmeN` in class `nvme` (unless that is virtual too).
fn real_nvme_parent<'v, V: SysfsView + ?Sized>(dev: &Dev<'v, V>) -> Option<Dev<'v, V>> {
    let name = dev.sysname();
    let rest = name.strip_prefix("nvme")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ctrl = &name[..4 + digits];
    let nvme = Dev::from_subsystem_sysname(dev.view, "nvme", ctrl)?;
    if nvme.devpath.starts_with("/devices/virtual/") {
        return None;
    }
    Some(nvme)
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeSysfs;
    use super::*;

    fn dev(s: &mut FakeSysfs, path: &str, subsystem: &str, devtype: &str) {
        let ue = if devtype.is_empty() {
            String::new()
        } else {
            format!("DEVTYPE={devtype}\n")
        };
        s.file(&format!("{path}/uevent"), ue.as_bytes());
        if !subsystem.is_empty() {
            s.link(&format!("{path}/subsystem"), &format!("/bus/{subsystem}"));
        }
    }

    /// A USB serial adapter behind a hub on an ARM board's EHCI.
    fn board() -> (FakeSysfs, String) {
        let mut s = FakeSysfs::default();
        let p = "/devices/platform/soc/3f980000.usb";
        dev(&mut s, "/devices/platform/soc", "platform", "");
        dev(&mut s, p, "platform", "");
        dev(&mut s, &format!("{p}/usb1"), "usb", "usb_device");
        dev(&mut s, &format!("{p}/usb1/1-1"), "usb", "usb_device");
        dev(&mut s, &format!("{p}/usb1/1-1/1-1.3"), "usb", "usb_device");
        let i = format!("{p}/usb1/1-1/1-1.3/1-1.3:1.1");
        dev(&mut s, &i, "usb", "usb_interface");
        dev(&mut s, &format!("{i}/ttyUSB1"), "usb-serial", "");
        dev(&mut s, &format!("{i}/ttyUSB1/tty/ttyUSB1"), "tty", "");
        (s, format!("{i}/ttyUSB1/tty/ttyUSB1"))
    }

    #[test]
    fn usb_on_a_platform_bus() {
        let (s, node) = board();
        let p = path_id(&s, &node).unwrap();
        assert_eq!(
            p.get("ID_PATH"),
            Some(&b"platform-3f980000.usb-usb-0:1.3:1.1"[..])
        );
        assert_eq!(
            p.get("ID_PATH_TAG"),
            Some(&b"platform-3f980000_usb-usb-0_1_3_1_1"[..])
        );
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn no_supported_parent_no_path() {
        let mut s = FakeSysfs::default();
        dev(&mut s, "/devices/virtual/tty/ttyX", "tty", "");
        dev(&mut s, "/devices/foo/usb1", "usb", "usb_device");
        dev(&mut s, "/devices/foo/usb1/1-2", "usb", "usb_device");
        assert_eq!(
            path_id(&s, "/devices/virtual/tty/ttyX"),
            Err(IdentityError::NoPath)
        );
        assert_eq!(
            path_id(&s, "/devices/foo/usb1/1-2"),
            Err(IdentityError::NoPath)
        );
    }

    #[test]
    fn tags() {
        assert_eq!(
            tag(b"pci-0000:00:02.0-usb-0:2:1.0"),
            b"pci-0000_00_02_0-usb-0_2_1_0"
        );
        assert_eq!(tag(b"::a::b::"), b"a_b");
    }

    #[test]
    fn scsi_host_rebased() {
        let mut s = FakeSysfs::default();
        let u = "/devices/pci0000:00/0000:00:14.0";
        dev(&mut s, u, "pci", "");
        dev(&mut s, &format!("{u}/usb2"), "usb", "usb_device");
        dev(&mut s, &format!("{u}/usb2/2-3"), "usb", "usb_device");
        let i = format!("{u}/usb2/2-3/2-3:1.0");
        dev(&mut s, &i, "usb", "usb_interface");
        dev(&mut s, &format!("{i}/host4"), "scsi", "scsi_host");
        dev(
            &mut s,
            &format!("{i}/host4/target4:0:0"),
            "scsi",
            "scsi_target",
        );
        let d = format!("{i}/host4/target4:0:0/4:0:0:1");
        dev(&mut s, &d, "scsi", "scsi_device");
        dev(&mut s, &format!("{d}/block/sdb"), "block", "disk");
        let p = path_id(&s, &format!("{d}/block/sdb")).unwrap();
        assert_eq!(
            p.get("ID_PATH"),
            Some(&b"pci-0000:00:14.0-usb-0:3:1.0-scsi-0:0:0:1"[..])
        );
    }
}
