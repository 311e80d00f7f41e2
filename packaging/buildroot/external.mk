include $(sort $(wildcard $(BR2_EXTERNAL_HOTPLUGD_PATH)/package/*/*.mk))
