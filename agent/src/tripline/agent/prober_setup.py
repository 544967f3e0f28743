"""The agent's probe as its config asks: the redaction it applies (the built-in rules plus
the secrets this agent knows), its local checks and textfiles. Its own module so
`tripline-agent --once` builds the same probe without importing the runner (gRPC, the
scheduler, the spool): it must collect and redact exactly what the agent sends."""

from __future__ import annotations

import logging
import sys

from tripline.agent import identity as identity_file
from tripline.agent import probes
from tripline.agent.config import AgentConfig
from tripline.agent.redact import Redaction, compile_patterns
from tripline.agent.textfile import Textfile
from tripline.common.terminal import escape

log = logging.getLogger(__name__)


def redaction_for(config: AgentConfig) -> Redaction:
    """What the probe redacts from command lines besides the built-in rules: the
    config's extra patterns, the enrollment token and the credential (when enrolled)."""
    credential = None
    try:
        ident = identity_file.load(config.state_dir / "identity.json")
    except identity_file.IdentityError:
        ident = None  # the transport reports it, with what to do, when it needs one
    if ident is not None:
        credential = ident.credential
    redaction = Redaction(patterns=compile_patterns(config.redact_patterns))
    return redaction.with_secrets(config.enrollment_token, credential)


def prober_for(config: AgentConfig) -> probes.Prober:
    """The agent's probes as its config asks: processes, local checks, textfiles."""
    textfile = None
    if config.textfile_dir is not None:
        if not config.textfile_dir.is_dir():
            # Not fatal: the scripts may make it later. Until then every collection
            # counts agent_probe_errors_total{probe="textfile"}.
            log.warning(
                "textfile_dir is not a directory (yet); no textfile is read until it is",
                extra={"textfile_dir": escape(str(config.textfile_dir))},
            )
        textfile = Textfile(
            config.textfile_dir,
            max_age=config.textfile_max_age,
            max_series=config.textfile_max_series,
        )
    if config.service_checks and sys.platform != "win32":
        log.warning(
            "service_checks are for Windows services; none is checked on this system",
            extra={"services": list(config.service_checks)},
        )
    return probes.Prober(
        collect_processes=config.collect_processes,
        command_lines=config.send_command_lines,
        redaction=redaction_for(config),
        process_checks=config.process_checks,
        service_checks=config.service_checks,
        textfile=textfile,
    )
