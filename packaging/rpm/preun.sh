# %preun of sonde-agent and sonde-collector: %systemd_preun written out.
# Removal (not upgrade): disable and stop the unit.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now @PACKAGE@.service >/dev/null 2>&1 || :
fi
