"""The redaction the agent's probe applies: the built-in rules plus the secrets this
agent knows. Its own module so `tripline-agent --once` builds it without importing the
runner (gRPC, the scheduler, the spool): it must redact exactly what the agent sends."""

from __future__ import annotations

from tripline.agent import identity as identity_file
from tripline.agent.config import AgentConfig
from tripline.agent.redact import Redaction, compile_patterns


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
