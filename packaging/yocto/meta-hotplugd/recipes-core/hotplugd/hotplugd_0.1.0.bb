SUMMARY = "A small uevent/hotplug daemon for embedded Linux"
DESCRIPTION = "Matches kernel uevents against udev-style rules and runs their \
               handlers (USB serial getty, USB stick mount, USB network). The kernel's \
               devtmpfs creates the device nodes; hotplugd never loses an event silently."
HOMEPAGE = "https://git.example.invalid/hotplugd"
BUGTRACKER = "https://git.example.invalid/hotplugd/issues"
SECTION = "base"
CVE_PRODUCT = "hotplugd"
LICENSE = "MIT | Apache-2.0"
# The crate has no license file yet: Cargo.toml's license line is the record.
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=11;endline=11;md5=86b31c7756a1a7962f28b62856ed4f05"

# A commit of the crate (packaging/PIN); its Cargo.toml has version ${PV}.
SRC_URI = "git://git.example.invalid/hotplugd.git;protocol=https;branch=main"
SRCREV = "a13f72a32f185dbf41b3a692cd90e96e0080acd1"

inherit cargo cargo-update-recipe-crates update-rc.d systemd

require ${BPN}-crates.inc

# The crate's release profile strips the binary; let do_package strip it
# (and fill hotplugd-dbg) instead, or the already-stripped QA check fails.
export CARGO_PROFILE_RELEASE_STRIP = "false"

INITSCRIPT_NAME = "hotplugd"
INITSCRIPT_PARAMS = "start 03 S ."
SYSTEMD_SERVICE:${PN} = "hotplugd.service"

do_install:append() {
    # the init files expect /usr/sbin/hotplugd
    install -d ${D}${sbindir}
    mv ${D}${bindir}/hotplugd ${D}${sbindir}/hotplugd
    rmdir --ignore-fail-on-non-empty ${D}${bindir}
    # rules in /etc/hotplugd/rules.d, handlers in /usr/libexec/hotplugd
    sh ${S}/board/install.sh generic ${D} --init none --libexecdir ${libexecdir}/hotplugd
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -D -m 0755 ${S}/board/generic/init/busybox/S10hotplugd \
            ${D}${sysconfdir}/init.d/hotplugd
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -D -m 0644 ${S}/board/generic/init/systemd/hotplugd.service \
            ${D}${systemd_system_unitdir}/hotplugd.service
    fi
}

FILES:${PN} += "${libexecdir}/hotplugd"
CONFFILES:${PN} = "${sysconfdir}/hotplugd/rules.d"

# To make it the image's device manager (packagegroup-core-boot), in the
# distro or local.conf: VIRTUAL-RUNTIME_dev_manager = "hotplugd"
