#!/usr/bin/env python3
"""Builds tests/corpus/sysfs/rpi3: a Raspberry Pi 3 B's USB tree (no PCI:
the dwc_otg controller is a platform device under /soc), with the files and
links udev's usb_id, path_id and input_id read. Where every attribute comes
from: rpi3/SOURCES.md. Run from anywhere; rewrites rpi3/ (SOURCES.md kept).

    python3 tests/corpus/sysfs/rpi3-build.py
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "rpi3")
KERNEL = "6.1.21-v8+"  # a Raspberry Pi OS 64-bit kernel with dwc_otg


def put(path, text):
    p = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())


def link(path, target):
    """A relative symlink at path to the tree path target, as sysfs makes."""
    p = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    t = os.path.join(ROOT, target)
    os.makedirs(t, exist_ok=True)
    os.symlink(os.path.relpath(t, os.path.dirname(p)), p)


def attrs(at, **kv):
    for k, v in kv.items():
        put(f"{at}/{k}", v + "\n")


def bitmap64(words32):
    """A capability bitmap printed by a 32-bit kernel ("ffff 0 1c3", most
    significant first) as a 64-bit kernel prints the same bits."""
    w = [int(x, 16) for x in words32.split()][::-1]  # w[0] least significant
    if len(w) % 2:
        w.append(0)
    longs = [w[i] | (w[i + 1] << 32) for i in range(0, len(w), 2)]
    while len(longs) > 1 and longs[-1] == 0:
        longs.pop()
    return " ".join("%x" % x for x in reversed(longs))


def descriptors(vid, pid, bcd, cls, ifaces, speed_hs):
    """The usb `descriptors` file: device descriptor + the configuration
    (config, then per interface its descriptor and endpoints)."""
    mps0 = 64 if speed_hs else 8
    dev = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, cls[0], cls[1], cls[2],
                      mps0, vid, pid, bcd, 1, 2, 0, 1)
    body = b""
    nums = set()
    for num, alt, c, s, p, eps in ifaces:
        nums.add(num)
        body += struct.pack("<BBBBBBBBB", 9, 4, num, alt, len(eps), c, s, p, 0)
        for addr, attr, size in eps:
            body += struct.pack("<BBBBHB", 7, 5, addr, attr, size, 1)
    cfg = struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), len(nums), 1, 0, 0xA0, 50)
    return dev + cfg + body


USB = "devices/platform/soc/3f980000.usb"


def usb_device(path, busdev, minor, vid, pid, bcd, speed, cls, ifaces,
               manufacturer=None, product=None, serial=None):
    d = f"{USB}/{path}"
    bus, devnum = busdev
    attrs(d, idVendor="%04x" % vid, idProduct="%04x" % pid, bcdDevice="%04x" % bcd,
          speed=str(speed), version=" 2.00", bDeviceClass="%02x" % cls[0],
          bDeviceSubClass="%02x" % cls[1], bDeviceProtocol="%02x" % cls[2],
          bNumInterfaces="%2d" % len({i[0] for i in ifaces}), bConfigurationValue="1",
          bmAttributes="a0", bMaxPower="100mA", busnum=str(bus), devnum=str(devnum),
          devpath=path.split("/")[-1].split("-", 1)[1] if "-" in path else "0",
          maxchild="4" if cls[0] == 9 else "0", removable="unknown",
          authorized="1", configuration="")
    put(f"{d}/dev", f"189:{minor}\n")
    for k, v in (("manufacturer", manufacturer), ("product", product), ("serial", serial)):
        if v is not None:
            put(f"{d}/{k}", v + "\n")
    put(f"{d}/descriptors", descriptors(vid, pid, bcd, cls, ifaces, speed == 480))
    put(f"{d}/uevent", f"MAJOR=189\nMINOR={minor}\nDEVNAME=bus/usb/{bus:03d}/{devnum:03d}\n"
        f"DEVTYPE=usb_device\nDRIVER=usb\nPRODUCT={vid:x}/{pid:x}/{bcd:x}\n"
        f"TYPE={cls[0]}/{cls[1]}/{cls[2]}\nBUSNUM={bus:03d}\nDEVNUM={devnum:03d}\n")
    link(f"{d}/subsystem", "bus/usb")
    link(f"{d}/driver", "bus/usb/drivers/usb")
    return d


def usb_interface(dev, name, vid, pid, bcd, num, c, s, p, driver, neps):
    d = f"{dev}/{name}"
    attrs(d, bInterfaceNumber="%02x" % num, bAlternateSetting=" 0",
          bInterfaceClass="%02x" % c, bInterfaceSubClass="%02x" % s,
          bInterfaceProtocol="%02x" % p, bNumEndpoints="%02x" % neps, authorized="1",
          modalias=f"usb:v{vid:04X}p{pid:04X}d{bcd:04X}dc00dsc00dp00ic{c:02X}isc{s:02X}ip{p:02X}in{num:02X}")
    put(f"{d}/uevent", f"DEVTYPE=usb_interface\nDRIVER={driver}\nPRODUCT={vid:x}/{pid:x}/{bcd:x}\n"
        f"TYPE=0/0/0\nINTERFACE={c}/{s}/{p}\n"
        f"MODALIAS=usb:v{vid:04X}p{pid:04X}d{bcd:04X}dc00dsc00dp00ic{c:02X}isc{s:02X}ip{p:02X}in{num:02X}\n")
    link(f"{d}/subsystem", "bus/usb")
    link(f"{d}/driver", f"bus/usb/drivers/{driver}")
    return d


def serial_port(iface, tty, minor, driver):
    d = f"{iface}/{tty}"
    attrs(d, port_number="0")
    put(f"{d}/uevent", f"DRIVER={driver}\n")
    link(f"{d}/subsystem", "bus/usb-serial")
    link(f"{d}/driver", f"bus/usb-serial/drivers/{driver}")
    tty_node(f"{d}/tty/{tty}", 188, minor, tty)


def tty_node(d, major, minor, name):
    put(f"{d}/uevent", f"MAJOR={major}\nMINOR={minor}\nDEVNAME={name}\n")
    put(f"{d}/dev", f"{major}:{minor}\n")
    link(f"{d}/subsystem", "class/tty")
    link(f"class/tty/{name}", d)


def hid(iface, name, driver, hid_name, phys, uniq):
    d = f"{iface}/{name}"
    bus, vid, pid = name.split(".")[0].split(":")
    put(f"{d}/uevent", f"DRIVER={driver}\nHID_ID={bus}:0000{vid}:0000{pid}\nHID_NAME={hid_name}\n"
        f"HID_PHYS={phys}\nHID_UNIQ={uniq}\nMODALIAS=hid:b{bus}g0001v0000{vid}p0000{pid}\n")
    link(f"{d}/subsystem", "bus/hid")
    link(f"{d}/driver", f"bus/hid/drivers/{driver}")
    return d


def hidraw(hiddev, n):
    d = f"{hiddev}/hidraw/hidraw{n}"
    put(f"{d}/uevent", f"MAJOR=247\nMINOR={n}\nDEVNAME=hidraw{n}\n")
    put(f"{d}/dev", f"247:{n}\n")
    link(f"{d}/subsystem", "class/hidraw")


def input_dev(hiddev, n, product, name, phys, uniq, caps, nodes):
    d = f"{hiddev}/input/input{n}"
    bus, vid, pid, ver = product
    for k in ("bustype", "vendor", "product", "version"):
        put(f"{d}/id/{k}", "%04x\n" % {"bustype": bus, "vendor": vid, "product": pid, "version": ver}[k])
    attrs(d, name=name, phys=phys, uniq=uniq, properties=caps.get("prop", "0"))
    ev = "\n".join(f"{k.upper()}={v}" for k, v in caps.items() if k != "prop")
    for k in ("ev", "key", "rel", "abs", "msc", "led", "snd", "ff", "sw"):
        put(f"{d}/capabilities/{k}", caps.get(k, "0") + "\n")
    put(f"{d}/uevent", f"PRODUCT={bus:x}/{vid:x}/{pid:x}/{ver:x}\nNAME=\"{name}\"\nPHYS=\"{phys}\"\n"
        f"UNIQ=\"{uniq}\"\nPROP={caps.get('prop', '0')}\n{ev}\n")
    link(f"{d}/subsystem", "class/input")
    for node, minor in nodes:
        e = f"{d}/{node}"
        put(f"{e}/uevent", f"MAJOR=13\nMINOR={minor}\nDEVNAME=input/{node}\n")
        put(f"{e}/dev", f"13:{minor}\n")
        link(f"{e}/subsystem", "class/input")
        link(f"class/input/{node}", e)


def scsi_stick(iface, vendor, model, rev):
    """host0/target0:0:0/0:0:0:0 (sd) -> block/sda -> sda1, and bsg."""
    h = f"{iface}/host0"
    put(f"{h}/uevent", "DEVTYPE=scsi_host\n")
    link(f"{h}/subsystem", "bus/scsi")
    put(f"{h}/scsi_host/host0/uevent", "")
    put(f"{h}/scsi_host/host0/proc_name", "usb-storage\n")
    link(f"{h}/scsi_host/host0/subsystem", "class/scsi_host")
    t = f"{h}/target0:0:0"
    put(f"{t}/uevent", "DEVTYPE=scsi_target\n")
    link(f"{t}/subsystem", "bus/scsi")
    d = f"{t}/0:0:0:0"
    put(f"{d}/uevent", "DEVTYPE=scsi_device\nDRIVER=sd\nMODALIAS=scsi:t-0x00\n")
    attrs(d, vendor=vendor, model=model, rev=rev, type="0", scsi_level="7",
          modalias="scsi:t-0x00", state="running")
    link(f"{d}/subsystem", "bus/scsi")
    link(f"{d}/driver", "bus/scsi/drivers/sd")
    b = f"{d}/block/sda"
    put(f"{b}/uevent", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\nDISKSEQ=9\n")
    attrs(b, dev="8:0", size="60063744", removable="1", ro="0", range="16", ext_range="256")
    link(f"{b}/subsystem", "class/block")
    link("block/sda", b)
    p = f"{b}/sda1"
    put(f"{p}/uevent", "MAJOR=8\nMINOR=1\nDEVNAME=sda1\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=1\n")
    attrs(p, dev="8:1", partition="1", start="32", size="60063712", ro="0")
    link(f"{p}/subsystem", "class/block")
    g = f"{d}/bsg/0:0:0:0"
    put(f"{g}/uevent", "MAJOR=246\nMINOR=0\nDEVNAME=bsg/0:0:0:0\n")
    put(f"{g}/dev", "246:0\n")
    link(f"{g}/subsystem", "class/bsg")


def main():
    if os.path.isdir(ROOT):
        keep = os.path.join(ROOT, "SOURCES.md")
        saved = open(keep, "rb").read() if os.path.exists(keep) else None
        shutil.rmtree(ROOT)
        if saved is not None:
            put("SOURCES.md", saved)
    put("devices/platform/uevent", "")
    put("devices/platform/soc/uevent", "OF_NAME=soc\nOF_FULLNAME=/soc\nOF_COMPATIBLE_0=simple-bus\n"
        "OF_COMPATIBLE_N=1\nMODALIAS=of:NsocT(null)Csimple-bus\n")
    put("devices/platform/soc/driver_override", "(null)\n")
    link("devices/platform/soc/subsystem", "bus/platform")
    put(f"{USB}/uevent", "DRIVER=dwc_otg\nOF_NAME=usb\nOF_FULLNAME=/soc/usb@7e980000\n"
        "OF_COMPATIBLE_0=brcm,bcm2708-usb\nOF_COMPATIBLE_N=1\nMODALIAS=of:NusbT(null)Cbrcm,bcm2708-usb\n")
    put(f"{USB}/driver_override", "(null)\n")
    link(f"{USB}/subsystem", "bus/platform")
    link(f"{USB}/driver", "bus/platform/drivers/dwc_otg")

    # root hub
    usb_device("usb1", (1, 1), 0, 0x1d6b, 0x0002, 0x0601, 480, (9, 0, 1),
               [(0, 0, 9, 0, 0, [(0x81, 3, 4)])],
               manufacturer=f"Linux {KERNEL} dwc_otg_hcd", product="DWC OTG Controller",
               serial="3f980000.usb")
    # the board's SMSC LAN9514: a hub with two alternate settings, no strings
    hub = usb_device("usb1/1-1", (1, 2), 1, 0x0424, 0x9514, 0x0200, 480, (9, 0, 2),
                     [(0, 0, 9, 0, 1, [(0x81, 3, 1)]), (0, 1, 9, 0, 2, [(0x81, 3, 1)])])
    usb_interface(hub, "1-1:1.0", 0x0424, 0x9514, 0x0200, 0, 9, 0, 1, "hub", 1)
    # its Ethernet function, no strings
    eth = usb_device("usb1/1-1/1-1.1", (1, 3), 2, 0x0424, 0xec00, 0x0200, 480, (0xff, 0, 1),
                     [(0, 0, 0xff, 0, 0xff, [(0x81, 2, 512), (0x02, 2, 512), (0x83, 3, 16)])])
    usb_interface(eth, "1-1.1:1.0", 0x0424, 0xec00, 0x0200, 0, 0xff, 0, 0xff, "smsc95xx", 3)
    # FT2232H module with a blank EEPROM: two ports, no serial
    ft = usb_device("usb1/1-1/1-1.2", (1, 4), 3, 0x0403, 0x6010, 0x0700, 480, (0, 0, 0),
                    [(0, 0, 0xff, 0xff, 0xff, [(0x81, 2, 512), (0x02, 2, 512)]),
                     (1, 0, 0xff, 0xff, 0xff, [(0x83, 2, 512), (0x04, 2, 512)])],
                    manufacturer="FTDI", product="Dual RS232-HS")
    for num, tty in ((0, "ttyUSB0"), (1, "ttyUSB1")):
        i = usb_interface(ft, f"1-1.2:1.{num}", 0x0403, 0x6010, 0x0700, num, 0xff, 0xff, 0xff, "ftdi_sio", 2)
        serial_port(i, tty, num, "ftdi_sio")
    # a Genesys Logic 4-port hub on port 3 (no serial), and behind it:
    gl = usb_device("usb1/1-1/1-1.3", (1, 5), 4, 0x05e3, 0x0610, 0x9226, 480, (9, 0, 2),
                    [(0, 0, 9, 0, 1, [(0x81, 3, 1)]), (0, 1, 9, 0, 2, [(0x81, 3, 1)])],
                    product="USB2.0 Hub")
    usb_interface(gl, "1-1.3:1.0", 0x05e3, 0x0610, 0x9226, 0, 9, 0, 1, "hub", 1)
    # a CH340: product string only
    ch = usb_device("usb1/1-1/1-1.3/1-1.3.1", (1, 8), 7, 0x1a86, 0x7523, 0x0254, 12, (0xff, 0, 0),
                    [(0, 0, 0xff, 1, 2, [(0x82, 2, 32), (0x02, 2, 32), (0x81, 3, 8)])],
                    product="USB Serial")
    i = usb_interface(ch, "1-1.3.1:1.0", 0x1a86, 0x7523, 0x0254, 0, 0xff, 1, 2, "ch341", 3)
    serial_port(i, "ttyUSB2", 2, "ch341-uart")
    # a SanDisk Cruzer Blade stick with one partition
    sd = usb_device("usb1/1-1/1-1.3/1-1.3.4", (1, 9), 8, 0x0781, 0x5567, 0x0126, 480, (0, 0, 0),
                    [(0, 0, 8, 6, 0x50, [(0x81, 2, 512), (0x02, 2, 512)])],
                    manufacturer="SanDisk", product="Cruzer Blade", serial="4C530001230321119093")
    i = usb_interface(sd, "1-1.3.4:1.0", 0x0781, 0x5567, 0x0126, 0, 8, 6, 0x50, "usb-storage", 2)
    scsi_stick(i, "SanDisk ", "Cruzer Blade    ", "1.00")
    # Logitech Unifying receiver with a K400 (keyboard + touchpad as a mouse)
    lg = usb_device("usb1/1-1/1-1.4", (1, 6), 5, 0x046d, 0xc52b, 0x1211, 12, (0, 0, 0),
                    [(0, 0, 3, 1, 1, [(0x81, 3, 8)]), (1, 0, 3, 1, 2, [(0x82, 3, 8)]),
                     (2, 0, 3, 0, 0, [(0x83, 3, 32)])],
                    manufacturer="Logitech", product="USB Receiver")
    for num, (s, p) in enumerate(((1, 1), (1, 2), (0, 0))):
        i = usb_interface(lg, f"1-1.4:1.{num}", 0x046d, 0xc52b, 0x1211, num, 3, s, p, "usbhid", 1)
    rx = hid(i, "0003:046D:C52B.0003", "logitech-djreceiver", "Logitech USB Receiver",
             "usb-3f980000.usb-1.4/input2", "")
    hidraw(rx, 2)
    k400 = hid(rx, "0003:046D:400E.0005", "logitech-hidpp-device", "Logitech K400",
               "usb-3f980000.usb-1.4:1", "400e-30-07-d3-fb")
    input_dev(k400, 1, (3, 0x046d, 0x400e, 0x111), "Logitech K400", "usb-3f980000.usb-1.4:1",
              "400e-30-07-d3-fb",
              {"ev": "12001f",
               "key": bitmap64("3007f 0 0 0 0 483ffff 17aff32d bf544446 0 0 ffff0001 130f93 "
                               "8b17c007 ffff7bfa d9415fff febeffdf ffefffff ffffffff fffffffe"),
               "rel": "1c3", "abs": bitmap64("1 0"), "msc": "10", "led": "1f"},
              [("event1", 65)])
    # Arduino Leonardo: CDC ACM + a HID joystick
    ar = usb_device("usb1/1-1/1-1.5", (1, 7), 6, 0x2341, 0x8036, 0x0100, 12, (0xef, 2, 1),
                    [(0, 0, 2, 2, 0, [(0x81, 3, 16)]), (1, 0, 0x0a, 0, 0, [(0x02, 2, 64), (0x83, 2, 64)]),
                     (2, 0, 3, 0, 0, [(0x84, 3, 64)])],
                    manufacturer="Arduino LLC", product="Arduino Leonardo", serial="HIDAF")
    i = usb_interface(ar, "1-1.5:1.0", 0x2341, 0x8036, 0x0100, 0, 2, 2, 0, "cdc_acm", 1)
    tty_node(f"{i}/tty/ttyACM0", 166, 0, "ttyACM0")
    usb_interface(ar, "1-1.5:1.1", 0x2341, 0x8036, 0x0100, 1, 0x0a, 0, 0, "cdc_acm", 2)
    i = usb_interface(ar, "1-1.5:1.2", 0x2341, 0x8036, 0x0100, 2, 3, 0, 0, "usbhid", 1)
    leo = hid(i, "0003:2341:8036.0001", "hid-generic", "Arduino LLC Arduino Leonardo",
              "usb-3f980000.usb-1.5/input2", "HIDAF")
    hidraw(leo, 0)
    input_dev(leo, 0, (3, 0x2341, 0x8036, 0x101), "Arduino LLC Arduino Leonardo",
              "usb-3f980000.usb-1.5/input2", "HIDAF",
              {"ev": "1b",
               "key": bitmap64("ffff 0 0 0 0 0 0 0 0 0 0 0 0 ffff 0 0 0 0 0 0 0 0 0"),
               "abs": "f003f", "msc": "10"},
              [("event0", 64), ("js0", 0)])


if __name__ == "__main__":
    main()
