################################################################################
#
# hotplugd
#
################################################################################

# A commit of the crate (packaging/PIN); its Cargo.toml has version 0.1.0.
HOTPLUGD_VERSION = a13f72a32f185dbf41b3a692cd90e96e0080acd1
HOTPLUGD_CPE_ID_VERSION = 0.1.0
HOTPLUGD_SITE = https://git.example.invalid/hotplugd.git
HOTPLUGD_SITE_METHOD = git
HOTPLUGD_LICENSE = MIT or Apache-2.0

# Buildroot's cargo infrastructure sets codegen-units 16, no LTO and the
# opt-level of BR2_OPTIMIZE_*, which undoes the crate's size profile; these
# come after it on the command line, so they win.
HOTPLUGD_CARGO_ENV = \
	CARGO_PROFILE_RELEASE_OPT_LEVEL="z" \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS="1" \
	CARGO_PROFILE_RELEASE_LTO="true" \
	CARGO_PROFILE_RELEASE_PANIC="abort"

# The init scripts expect /usr/sbin/hotplugd; cargo install would put it in
# /usr/bin. Rules and handlers come from board/generic via its install.sh.
define HOTPLUGD_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/hotplugd \
		$(TARGET_DIR)/usr/sbin/hotplugd
	sh $(@D)/board/install.sh generic $(TARGET_DIR) --init none
endef

define HOTPLUGD_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(HOTPLUGD_PKGDIR)/S10hotplugd \
		$(TARGET_DIR)/etc/init.d/S10hotplugd
endef

define HOTPLUGD_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/board/generic/init/systemd/hotplugd.service \
		$(TARGET_DIR)/usr/lib/systemd/system/hotplugd.service
endef

$(eval $(cargo-package))
