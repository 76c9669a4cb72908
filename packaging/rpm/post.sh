# %post of sonde-agent and sonde-collector (%{name} is expanded by rpm at
# install time: the scriptlet is flagged RPMSCRIPT_FLAG_EXPAND). This is
# what %sysusers_create_compat, %tmpfiles_create and %systemd_post expand
# to, written out because cargo-generate-rpm does not run rpmbuild's macros.
systemd-sysusers %{name}.conf >/dev/null 2>&1 || :
systemd-tmpfiles --create %{name}.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # First installation: enable the unit if the preset policy says so.
    # It starts once its config and certificates are in place
    # (ConditionPathExists= in the unit).
    systemctl --no-reload preset %{name}.service >/dev/null 2>&1 || :
fi
