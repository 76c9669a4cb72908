# %post of sonde-agent and sonde-collector (packaging/build.sh puts the
# package name in place of @PACKAGE@). This is what %sysusers_create_compat,
# %tmpfiles_create and %systemd_post expand to, written out because
# cargo-generate-rpm does not run rpmbuild's macros.
systemd-sysusers @PACKAGE@.conf >/dev/null 2>&1 || :
systemd-tmpfiles --create @PACKAGE@.conf >/dev/null 2>&1 || :
if [ "$1" -ge 2 ]; then
    # Upgrade: hand files placed for the earlier layout to the service user
    # before %postun of the old package restarts the service.
    /usr/lib/@PACKAGE@/upgrade-files @PACKAGE@ || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # First installation: enable the unit if the preset policy says so.
    # It starts once its config and certificates are in place
    # (ConditionPathExists= in the unit).
    systemctl --no-reload preset @PACKAGE@.service >/dev/null 2>&1 || :
fi
