# %postun of sonde-agent and sonde-collector: %systemd_postun_with_restart
# written out. Upgrade: reload unit files and restart the running service
# with the new binary. Removal: reload unit files only.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart @PACKAGE@.service >/dev/null 2>&1 || :
fi
