"""The lab's Exchange model: cmdlets, prompts, ranking and mail flow (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from bot.exchange.snapshot import CertificateStatus, ExchangeService, RootCAType
from bot.lab.model import (
    HOST_EXCEPTION_PREFIX,
    NO_LANGUAGE_MESSAGE,
    ExchangeOrganisation,
    LabCommandInfoRecord,
    name_matches,
    services_string_form,
)
from bot.lab.records import (
    CommandCall,
    ConfirmationRequest,
    LabCertificateRecord,
    LabHybridConfigurationRecord,
    LabQueueRecord,
    LabReceiveConnectorRecord,
    LabSendConnectorRecord,
    LabServerRecord,
    PipelineResult,
    SelectedObject,
    SmtpX509IdentifierRecord,
)
from bot.lab.state import LabState, default_state, packaged_state, parse_state

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
USER = "CONTOSO\\admin"
CONNECTOR = "Outbound to Office 365 - 6f1e2a4c-8b3d-4e5f-9a7b-2c1d0e9f8a6b"
PUBLIC_ISSUER = "CN=Contoso Public Root CA, O=Lab Trust Services, C=US"
PUBLIC_PIN = f"<I>{PUBLIC_ISSUER}<S>CN=mail.contoso.com"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def call(name: str, *positional: Any, **named: Any) -> CommandCall:
    parameters: list[tuple[str | None, Any]] = [(None, value) for value in positional]
    parameters += list(named.items())
    return CommandCall(name=name, parameters=tuple(parameters))


def run(org: ExchangeOrganisation, *commands: CommandCall, answer: bool | None = None,
        server: str = "EX01") -> PipelineResult:
    return org.run(commands, user=USER, connected_server=server, answer=answer)


def make_org(state: LabState) -> ExchangeOrganisation:
    return ExchangeOrganisation(state, clock=Clock())


@pytest.fixture
def org() -> ExchangeOrganisation:
    return make_org(default_state(now=NOW))


def thumbprints(org: ExchangeOrganisation) -> dict[str, str]:
    return {c.friendly_name: c.thumbprint for c in org.certificates("EX01")}


def thumb(org: ExchangeOrganisation, cert_id: str) -> str:
    return org.pki.certificate("EX01", cert_id).thumbprint


def certificate(org: ExchangeOrganisation, cert_id: str) -> LabCertificateRecord:
    wanted = thumb(org, cert_id)
    return next(c for c in org.certificates("EX01") if c.thumbprint == wanted)


def custom_state(certificates: list[dict[str, Any]], *, connector: dict[str, Any] | None = None,
                 behaviour: str = "additive", queue_messages: int = 25) -> LabState:
    document = {
        "tenant": "contoso",
        "cas": [{"id": "public-root", "public": True}, {"id": "corp-root", "public": False}],
        "servers": [{
            "name": "EX01", "fqdn": "ex01.contoso.com", "certificates": certificates,
            "send_connectors": [connector or {"name": CONNECTOR, "cloud": True}],
            "queue_messages": queue_messages,
        }],
        "users": [{"name": "admin", "password": "Lab-Passw0rd!"}],
        "behaviour": behaviour,
    }
    return parse_state(yaml.safe_dump(document), source="test.yaml", now=NOW)


def cert(cert_id: str, issuer: str, domains: list[str], not_before: str,
         not_after: str = "+300d", services: tuple[str, ...] = ("SMTP",),
         subject: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": cert_id, "issuer": issuer, "subject": subject or f"CN={domains[0]}",
            "domains": domains, "not_before": not_before, "not_after": not_after,
            "services": list(services), **extra}


# ---------------------------------------------------------------------------- servers

def test_servers_and_get_exchange_server(org: ExchangeOrganisation) -> None:
    assert [s.name for s in org.servers] == ["EX01"]
    result = run(org, call("Get-ExchangeServer"))
    record = result.output[0]
    assert isinstance(record, LabServerRecord)
    assert (record.name, record.fqdn, record.server_role) == ("EX01", "ex01.contoso.com",
                                                              "Mailbox")
    assert record.admin_display_version.startswith("Version 15.")
    assert run(org, call("Get-ExchangeServer", "ex01.contoso.com")).output == (record,)


def test_unknown_server_is_exchanges_not_found_error(org: ExchangeOrganisation) -> None:
    result = run(org, call("Get-ExchangeServer", Identity="EX99"))
    assert not result.failed
    assert result.output == ()
    (error,) = result.errors
    assert error.message == ("The operation couldn't be performed because object 'EX99' "
                             "couldn't be found on 'DC01.contoso.com'.")
    assert error.category == "ObjectNotFound"
    assert error.exception_type.endswith("ManagementObjectNotFoundException")
    assert "GetExchangeServer" in error.fully_qualified_error_id
    assert not error.terminating
    result = run(org, call("Get-ExchangeCertificate", Server="EX99"))
    assert "object 'EX99' couldn't be found" in result.errors[0].message


# ---------------------------------------------------------------------------- certificates

def test_get_exchange_certificate_lists_the_connected_servers_store(
        org: ExchangeOrganisation) -> None:
    result = run(org, call("Get-ExchangeCertificate"))
    assert not result.failed
    assert not result.errors
    records = {r.friendly_name: r for r in result.output if isinstance(r, LabCertificateRecord)}
    assert len(records) == 4
    public = records["mail.contoso.com (public)"]
    internal = records["ex01.contoso.com (corp CA)"]
    setup = records["Microsoft Exchange"]
    auth = records["Microsoft Exchange Server Auth Certificate"]
    assert public.services == ExchangeService.IIS | ExchangeService.SMTP
    assert internal.services == ExchangeService.from_names("IMAP, POP, SMTP")
    assert setup.services == ExchangeService.from_names("IMAP, POP, IIS, SMTP")
    assert auth.services == ExchangeService.SMTP
    assert (public.root_ca_type, internal.root_ca_type, setup.root_ca_type,
            auth.root_ca_type) == (RootCAType.THIRD_PARTY, RootCAType.ENTERPRISE,
                                   RootCAType.REGISTRY, RootCAType.NONE)
    assert {r.status for r in records.values()} == {CertificateStatus.VALID}
    assert setup.self_signed
    assert not public.self_signed
    assert public.issuer == PUBLIC_ISSUER
    assert public.subject == "CN=mail.contoso.com"
    assert public.server == "EX01"
    assert public.server_fqdn == "ex01.contoso.com"
    assert public.not_before == NOW - timedelta(days=60)
    assert public.domains == ("mail.contoso.com", "autodiscover.contoso.com",
                              "ex01.contoso.com")
    assert public.der == org.pki.certificate("EX01", "public-cert").der


def test_get_certificate_by_thumbprint_identity_and_domain(org: ExchangeOrganisation) -> None:
    public = thumb(org, "public-cert")
    by_thumbprint = run(org, call("Get-ExchangeCertificate", Thumbprint=public.lower()))
    assert [r.thumbprint for r in by_thumbprint.output] == [public]  # type: ignore[attr-defined]
    positional = run(org, call("Get-ExchangeCertificate", public))
    assert positional.output == by_thumbprint.output
    identity = run(org, call("Get-ExchangeCertificate", Identity=f"EX01\\{public}"))
    assert identity.output == by_thumbprint.output
    by_domain = run(org, call("Get-ExchangeCertificate", DomainName="mail.contoso.com"))
    assert {r.thumbprint for r in by_domain.output} == {  # type: ignore[attr-defined]
        public, thumb(org, "internal-cert")}


def test_unknown_thumbprint_is_a_non_terminating_error(org: ExchangeOrganisation) -> None:
    result = run(org, call("Get-ExchangeCertificate", Thumbprint="00" * 20))
    assert not result.failed
    assert result.output == ()
    (error,) = result.errors
    assert error.message == f"The certificate with thumbprint {'00' * 20} was not found."
    assert error.category == "ObjectNotFound"
    assert not error.terminating


def test_expired_certificate_status_follows_the_clock() -> None:
    clock = Clock()
    org = ExchangeOrganisation(default_state(now=NOW), clock=clock)
    clock.now = NOW + timedelta(days=301)
    assert certificate(org, "public-cert").status == CertificateStatus.DATE_INVALID
    assert certificate(org, "internal-cert").status == CertificateStatus.VALID


# ---------------------------------------------------------------------------- binding

def test_parameter_names_are_case_insensitive_and_unique_prefixes_bind(
        org: ExchangeOrganisation) -> None:
    public = thumb(org, "public-cert")
    result = run(org, call("get-exchangecertificate", thumb=public, SERV="ex01"))
    assert [r.thumbprint for r in result.output] == [public]  # type: ignore[attr-defined]


def test_unknown_parameter_is_a_terminating_binding_error(org: ExchangeOrganisation) -> None:
    result = run(org, call("Get-ExchangeCertificate", Colour="blue"))
    assert result.failed
    (error,) = result.errors
    assert error.message == "A parameter cannot be found that matches parameter name 'Colour'."
    assert error.exception_type == "System.Management.Automation.ParameterBindingException"
    assert error.terminating


def test_ambiguous_prefix_and_extra_positional(org: ExchangeOrganisation) -> None:
    ambiguous = run(org, call("Enable-ExchangeCertificate", thumb(org, "public-cert"),
                              Serv="SMTP"))
    assert ambiguous.failed
    assert "ambiguous" in ambiguous.errors[0].message
    assert "-Server -Services" in ambiguous.errors[0].message
    extra = run(org, call("Get-SendConnector", CONNECTOR, "again"))
    assert extra.failed
    assert extra.errors[0].message == ("A positional parameter cannot be found that accepts "
                                       "argument 'again'.")


def test_missing_mandatory_parameter_is_an_error_never_a_prompt(
        org: ExchangeOrganisation) -> None:
    pipeline = org.execute([call("Enable-ExchangeCertificate", Thumbprint=thumb(
        org, "public-cert"))], user=USER, connected_server="EX01")
    with pytest.raises(StopIteration) as stop:
        next(pipeline)
    result: PipelineResult = stop.value.value
    assert result.failed
    assert result.errors[0].message == ("Cannot process command because of one or more "
                                        "missing mandatory parameters: Services.")
    assert run(org, call("Set-SendConnector", TlsCertificateName=PUBLIC_PIN)).failed


def test_bad_service_name_is_a_binding_error(org: ExchangeOrganisation) -> None:
    result = run(org, call("Enable-ExchangeCertificate", thumb(org, "internal-cert"),
                           Services="IMAP,SMTPX"))
    assert result.failed
    assert "Unable to match the identifier name SMTPX" in result.errors[0].message


def test_unknown_cmdlet_and_scripts(org: ExchangeOrganisation) -> None:
    unknown = run(org, call("Get-Mailbox"))
    assert unknown.failed
    assert unknown.errors[0].message.startswith(
        "The term 'Get-Mailbox' is not recognized as the name of a cmdlet, function, script "
        "file, or operable program.")
    assert unknown.errors[0].exception_type.endswith("CommandNotFoundException")
    script = org.run([CommandCall(name="Get-ExchangeCertificate | fl", is_script=True)],
                     user=USER, connected_server="EX01")
    assert script.failed
    assert script.errors[0].message == NO_LANGUAGE_MESSAGE
    assert script.errors[0].message == ("The syntax is not supported by this runspace. This "
                                        "can occur if the runspace is in no-language mode.")


def test_error_action_stop_turns_errors_terminating(org: ExchangeOrganisation) -> None:
    stopped = run(org, call("Get-ExchangeCertificate", Thumbprint="AB", ErrorAction="Stop"))
    assert stopped.failed
    assert stopped.errors[0].terminating
    silent = run(org, call("Get-ExchangeCertificate", Thumbprint="AB",
                           ErrorAction="SilentlyContinue"))
    assert not silent.failed
    assert silent.errors == ()


def test_pipeline_input_into_a_cmdlet_that_takes_none(org: ExchangeOrganisation) -> None:
    result = run(org, call("Get-ExchangeCertificate"), call("Get-Queue"))
    assert result.failed
    assert "input object cannot be bound" in result.errors[0].message


# ------------------------------------------------------------ Enable-ExchangeCertificate

def test_kb_unbinding_is_additive_by_default(org: ExchangeOrganisation) -> None:
    internal = thumb(org, "internal-cert")
    result = run(org, call("Enable-ExchangeCertificate", Server="EX01", Thumbprint=internal,
                           Services="IMAP,POP"))
    assert not result.failed
    assert not result.errors
    assert certificate(org, "internal-cert").services == ExchangeService.from_names(
        "IMAP, POP, SMTP")


def test_kb_unbinding_replaces_services_in_replace_behaviour() -> None:
    org = make_org(packaged_state("replace-behaviour", now=NOW))
    result = run(org, call("Enable-ExchangeCertificate", Server="EX01",
                           Thumbprint=thumb(org, "internal-cert"), Services=["IMAP", "POP"]))
    assert not result.errors
    assert certificate(org, "internal-cert").services == ExchangeService.from_names("IMAP, POP")


def test_additive_enable_adds_services(org: ExchangeOrganisation) -> None:
    run(org, call("Enable-ExchangeCertificate", thumb(org, "internal-cert"), Services="UM"))
    assert certificate(org, "internal-cert").services == ExchangeService.from_names(
        "IMAP, POP, UM, SMTP")


def test_enabling_smtp_prompts_to_overwrite_the_default_certificate(
        org: ExchangeOrganisation) -> None:
    public, setup = thumb(org, "public-cert"), thumb(org, "exchange-self-signed")
    pipeline = org.execute([call("Enable-ExchangeCertificate", Thumbprint=public,
                                 Services="SMTP")], user=USER, connected_server="EX01")
    request = next(pipeline)
    assert isinstance(request, ConfirmationRequest)
    assert request.caption == "Confirm"
    assert request.message.startswith("Overwrite the existing default SMTP certificate?")
    assert f"Current certificate: '{setup}'" in request.message
    assert f"Replace it with certificate: '{public}'" in request.message
    assert "(expires " in request.message
    with pytest.raises(StopIteration) as stop:
        pipeline.send(True)
    assert not stop.value.value.failed
    again = org.execute([call("Enable-ExchangeCertificate", Thumbprint=public,
                              Services="SMTP")], user=USER, connected_server="EX01")
    with pytest.raises(StopIteration):
        next(again)  # the public certificate is the default now: no second prompt
    assert "confirmed" in org.call_log()[0].outcome


def test_answering_no_keeps_the_default_but_enables_smtp(org: ExchangeOrganisation) -> None:
    internal = thumb(org, "internal-cert")
    result = run(org, call("Enable-ExchangeCertificate", Thumbprint=internal,
                           Services="IMAP,POP,SMTP"), answer=False)
    assert not result.failed
    assert ExchangeService.SMTP in certificate(org, "internal-cert").services
    assert "declined" in org.call_log()[-1].outcome
    prompts: list[ConfirmationRequest] = []
    pipeline = org.execute([call("Enable-ExchangeCertificate", Thumbprint=internal,
                                 Services="SMTP")], user=USER, connected_server="EX01")
    prompts.append(next(pipeline))
    assert prompts[0].message.startswith("Overwrite")


def test_a_client_without_a_host_gets_the_host_exception(org: ExchangeOrganisation) -> None:
    public = thumb(org, "public-cert")
    before = certificate(org, "public-cert")
    result = run(org, call("Enable-ExchangeCertificate", Thumbprint=public,
                           Services="IIS,SMTP,POP"), answer=None)
    assert result.failed
    (error,) = result.errors
    assert error.terminating
    assert error.message.startswith(
        "A command that prompts the user failed because the host program or the command type "
        "does not support user interaction.")
    assert error.message.startswith(HOST_EXCEPTION_PREFIX)
    assert "Overwrite the existing default SMTP certificate?" in error.message
    assert error.exception_type == "System.Management.Automation.Host.HostException"
    assert certificate(org, "public-cert") == before
    assert org.call_log()[-1].outcome.startswith("failed:")


def test_force_answers_yes(org: ExchangeOrganisation) -> None:
    public = thumb(org, "public-cert")
    pipeline = org.execute([call("Enable-ExchangeCertificate", Thumbprint=public,
                                 Services="SMTP", Force=None)], user=USER, connected_server="EX01")
    with pytest.raises(StopIteration):
        next(pipeline)
    removed = run(org, call("Remove-ExchangeCertificate", thumb(org, "exchange-self-signed"),
                            Confirm=False))
    assert not removed.errors  # no longer the internal transport certificate


def test_adding_iis_moves_the_web_site_binding(org: ExchangeOrganisation) -> None:
    run(org, call("Enable-ExchangeCertificate", thumb(org, "internal-cert"), Services="IIS"))
    assert ExchangeService.IIS in certificate(org, "internal-cert").services
    assert certificate(org, "public-cert").services == ExchangeService.SMTP
    assert ExchangeService.IIS in certificate(org, "exchange-self-signed").services


def test_what_if_changes_nothing(org: ExchangeOrganisation) -> None:
    run(org, call("Enable-ExchangeCertificate", thumb(org, "internal-cert"), Services="IIS",
                  WhatIf=None))
    assert ExchangeService.IIS not in certificate(org, "internal-cert").services


# ------------------------------------------------------------ Remove-ExchangeCertificate

def test_remove_is_refused_while_a_send_connector_names_the_certificate(
        org: ExchangeOrganisation) -> None:
    assert not run(org, call("Set-SendConnector", CONNECTOR, TlsCertificateName=PUBLIC_PIN)
                   ).errors
    public = thumb(org, "public-cert")
    result = run(org, call("Remove-ExchangeCertificate", Server="EX01", Thumbprint=public,
                           Confirm=False))
    assert not result.failed
    (error,) = result.errors
    assert "These certificates are tagged with following Send Connectors : " \
           f"{CONNECTOR}" in error.message
    assert public in {c.thumbprint for c in org.certificates("EX01")}


def test_remove_refuses_the_internal_transport_certificate(org: ExchangeOrganisation) -> None:
    result = run(org, call("Remove-ExchangeCertificate", thumb(org, "exchange-self-signed"),
                           Confirm=False))
    assert "internal transport certificate cannot be removed" in result.errors[0].message


def test_remove_asks_first_and_removes_on_yes(org: ExchangeOrganisation) -> None:
    internal = thumb(org, "internal-cert")
    pipeline = org.execute([call("Remove-ExchangeCertificate", Thumbprint=internal)],
                           user=USER, connected_server="EX01")
    request = next(pipeline)
    assert f"Remove certificate with thumbprint {internal}" in request.message
    with pytest.raises(StopIteration):
        pipeline.send(False)
    assert internal in {c.thumbprint for c in org.certificates("EX01")}
    assert not run(org, call("Remove-ExchangeCertificate", Thumbprint=internal),
                   answer=True).errors
    assert internal not in {c.thumbprint for c in org.certificates("EX01")}
    assert run(org, call("Get-ExchangeCertificate", internal)).errors


# ---------------------------------------------------------------------------- connectors

def test_get_send_connector(org: ExchangeOrganisation) -> None:
    (record,) = run(org, call("Get-SendConnector")).output
    assert isinstance(record, LabSendConnectorRecord)
    assert record.name == CONNECTOR
    assert record.cloud_services_mail_enabled
    assert record.smart_hosts == ("contoso.mail.protection.outlook.com",)
    assert record.address_spaces == ("contoso.mail.onmicrosoft.com",)
    assert record.tls_certificate_name is None
    assert record.tls_auth_level == "DomainValidation"
    assert record.source_transport_servers == ("EX01",)
    assert run(org, call("Get-SendConnector", CONNECTOR.upper())).output == (record,)
    assert run(org, call("Get-SendConnector", "nope")).errors


def test_set_send_connector_pins_and_unpins(org: ExchangeOrganisation) -> None:
    result = run(org, call("Set-SendConnector", Identity=CONNECTOR, TlsCertificateName=PUBLIC_PIN))
    assert not result.errors
    assert not result.failed
    (record,) = run(org, call("Get-SendConnector", CONNECTOR)).output
    assert isinstance(record, LabSendConnectorRecord)
    assert record.tls_certificate_name == SmtpX509IdentifierRecord(
        certificate_issuer=PUBLIC_ISSUER, certificate_subject="CN=mail.contoso.com",
        subject_common_name="mail.contoso.com")
    assert record.tls_certificate_name.to_string() == PUBLIC_PIN
    unchanged = run(org, call("Set-SendConnector", CONNECTOR, TlsCertificateName=PUBLIC_PIN))
    assert unchanged.warnings == (f"The command completed successfully but no settings of "
                                  f"'{CONNECTOR}' have been modified.",)
    run(org, call("Set-SendConnector", CONNECTOR, TlsCertificateName=None))
    (record,) = run(org, call("Get-SendConnector", CONNECTOR)).output
    assert record.tls_certificate_name is None  # type: ignore[attr-defined]


def test_malformed_tls_certificate_name_is_refused(org: ExchangeOrganisation) -> None:
    result = run(org, call("Set-SendConnector", CONNECTOR, TlsCertificateName="CN=mail"))
    assert result.failed
    assert "SmtpX509Identifier" in result.errors[0].message
    assert run(org, call("Get-SendConnector")).output[0].tls_certificate_name is None  # type: ignore[attr-defined]


def test_receive_connectors(org: ExchangeOrganisation) -> None:
    records = run(org, call("Get-ReceiveConnector", Server="EX01")).output
    names = [r.name for r in records]  # type: ignore[attr-defined]
    assert "Default Frontend EX01" in names
    assert len(names) == 5
    (frontend,) = run(org, call("Get-ReceiveConnector", "EX01\\Default Frontend EX01")).output
    assert isinstance(frontend, LabReceiveConnectorRecord)
    assert frontend.fqdn == "ex01.contoso.com"
    assert "[::]:25" in frontend.bindings
    assert frontend.identity == "EX01\\Default Frontend EX01"


def test_hybrid_configuration_names_the_public_certificate(org: ExchangeOrganisation) -> None:
    (hybrid,) = run(org, call("Get-HybridConfiguration")).output
    assert isinstance(hybrid, LabHybridConfigurationRecord)
    assert hybrid.tls_certificate_name is not None
    assert hybrid.tls_certificate_name.to_string() == PUBLIC_PIN
    assert hybrid.sending_transport_servers == ("EX01",)
    assert hybrid.domains == ("contoso.com",)


# ---------------------------------------------------------------------------- ranking

def test_newer_internal_certificate_wins_when_unpinned(org: ExchangeOrganisation) -> None:
    prediction = org.predict_outbound("EX01", CONNECTOR)
    assert prediction.thumbprint == thumb(org, "internal-cert")
    assert not prediction.publicly_trusted
    assert "TlsCertificateName not set" in prediction.reason


def test_pinned_certificate_wins() -> None:
    org = make_org(packaged_state("healthy-pinned", now=NOW))
    prediction = org.predict_outbound("EX01", CONNECTOR)
    assert prediction.thumbprint == thumb(org, "public-cert")
    assert prediction.publicly_trusted


def test_self_signed_only_when_no_ca_issued_certificate_is_valid() -> None:
    certs = [cert("public", "public-root", ["ex01.contoso.com"], "-60d"),
             cert("setup", "self", ["ex01.contoso.com"], "-1d")]
    org = make_org(custom_state(certs))
    assert org.predicted_outbound_thumbprint("EX01", CONNECTOR) == thumb(org, "public")
    alone = make_org(custom_state([cert("setup", "self", ["ex01.contoso.com"], "-1d")]))
    assert alone.predicted_outbound_thumbprint("EX01", CONNECTOR) == thumb(alone, "setup")


def test_wildcard_certificates_match_one_label() -> None:
    certs = [cert("wild", "public-root", ["*.contoso.com"], "-5d", subject="CN=*.contoso.com"),
             cert("older", "public-root", ["ex01.contoso.com"], "-50d")]
    org = make_org(custom_state(certs))
    assert org.predicted_outbound_thumbprint("EX01", CONNECTOR) == thumb(org, "wild")
    assert name_matches("*.contoso.com", "ex01.contoso.com")
    assert not name_matches("*.contoso.com", "a.ex01.contoso.com")
    assert not name_matches("*.contoso.com", "contoso.com")


def test_expired_certificates_are_not_candidates() -> None:
    certs = [cert("public", "public-root", ["ex01.contoso.com"], "-60d"),
             cert("internal", "corp-root", ["ex01.contoso.com"], "-400d", not_after="-1d"),
             cert("future", "corp-root", ["ex01.contoso.com"], "+1d", not_after="+300d")]
    org = make_org(custom_state(certs))
    assert org.predicted_outbound_thumbprint("EX01", CONNECTOR) == thumb(org, "public")


def test_certificates_without_smtp_or_private_key_are_not_candidates() -> None:
    certs = [cert("public", "public-root", ["ex01.contoso.com"], "-60d"),
             cert("iis-only", "corp-root", ["ex01.contoso.com"], "-5d", services=("IIS",)),
             cert("no-key", "corp-root", ["ex01.contoso.com"], "-4d", private_key=False)]
    org = make_org(custom_state(certs))
    assert org.predicted_outbound_thumbprint("EX01", CONNECTOR) == thumb(org, "public")


def test_connector_fqdn_is_looked_up_before_the_server_fqdn() -> None:
    certs = [cert("public", "public-root", ["mail.contoso.com"], "-60d"),
             cert("internal", "corp-root", ["ex01.contoso.com"], "-5d")]
    connector = {"name": CONNECTOR, "cloud": True, "fqdn": "mail.contoso.com"}
    org = make_org(custom_state(certs, connector=connector))
    prediction = org.predict_outbound("EX01", CONNECTOR)
    assert prediction.thumbprint == thumb(org, "public")
    assert "connector FQDN mail.contoso.com" in prediction.reason


def test_pin_to_a_missing_certificate_selects_nothing() -> None:
    certs = [cert("internal", "corp-root", ["ex01.contoso.com"], "-5d")]
    connector = {"name": CONNECTOR, "cloud": True,
                 "tls_certificate_name": "<I>CN=Somebody<S>CN=mail.contoso.com"}
    org = make_org(custom_state(certs, connector=connector))
    assert org.predicted_outbound_thumbprint("EX01", CONNECTOR) is None
    queue = org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert queue.status == "Retry"


# ---------------------------------------------------------------------------- mail flow

RETRY_FILTER = "NextHopDomain -eq 'contoso.mail.protection.outlook.com' -and Status -eq 'Retry'"


def test_the_kb_queue_holds_the_untrusted_root_error(org: ExchangeOrganisation) -> None:
    queue = org.queue_for_exchange_online("EX01")
    assert isinstance(queue, LabQueueRecord)
    assert queue.identity.startswith("EX01\\")
    assert queue.delivery_type == "SmartHostConnectorDelivery"
    assert queue.next_hop_domain == "contoso.mail.protection.outlook.com"
    assert (queue.status, queue.message_count) == ("Retry", 25)
    assert queue.last_error is not None
    assert "454 4.7.0" in queue.last_error
    assert "UntrustedRoot" in queue.last_error
    listed = run(org, call("Get-Queue", Server="EX01")).output
    assert queue in listed
    assert run(org, call("Get-Queue", queue.identity)).output == (queue,)
    assert run(org, call("Get-Queue", Filter="Status -eq 'Retry'")).output == (queue,)


def test_retry_without_a_fix_does_not_drain(org: ExchangeOrganisation) -> None:
    result = run(org, call("Retry-Queue", Server="EX01", Filter=RETRY_FILTER))
    assert not result.failed
    assert not result.errors
    queue = org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert (queue.status, queue.message_count) == ("Retry", 25)


def test_pinning_the_connector_then_retry_drains_the_queue(org: ExchangeOrganisation) -> None:
    run(org, call("Set-SendConnector", CONNECTOR, TlsCertificateName=PUBLIC_PIN))
    before = org.queue_for_exchange_online("EX01")
    assert before is not None
    assert before.message_count == 25
    run(org, call("Retry-Queue", Server="EX01", Filter=RETRY_FILTER))
    queue = org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert (queue.status, queue.message_count, queue.last_error) == ("Ready", 0, None)


def test_kb_unbinding_with_additive_behaviour_does_not_drain(org: ExchangeOrganisation) -> None:
    run(org, call("Enable-ExchangeCertificate", Server="EX01",
                  Thumbprint=thumb(org, "internal-cert"), Services="IMAP,POP"))
    run(org, call("Retry-Queue", Server="EX01", Filter=RETRY_FILTER))
    queue = org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert (queue.status, queue.message_count) == ("Retry", 25)


def test_kb_unbinding_with_replace_behaviour_drains() -> None:
    org = make_org(packaged_state("replace-behaviour", now=NOW))
    run(org, call("Enable-ExchangeCertificate", Server="EX01",
                  Thumbprint=thumb(org, "internal-cert"), Services="IMAP,POP"))
    assert org.predicted_outbound_thumbprint("EX01", CONNECTOR) == thumb(org, "public-cert")
    run(org, call("Retry-Queue", Server="EX01", Filter=RETRY_FILTER))
    queue = org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert (queue.status, queue.message_count) == ("Ready", 0)


def test_healthy_states_start_drained() -> None:
    healthy = make_org(packaged_state("healthy-pinned", now=NOW))
    queue = healthy.queue_for_exchange_online("EX01")
    assert queue is not None
    assert (queue.status, queue.message_count) == ("Ready", 0)
    empty = make_org(custom_state([cert("internal", "corp-root", ["ex01.contoso.com"], "-5d")],
                                  queue_messages=0))
    queue = empty.queue_for_exchange_online("EX01")
    assert queue is not None
    assert (queue.status, queue.last_error) == ("Ready", None)


def test_retry_by_identity(org: ExchangeOrganisation) -> None:
    queue = org.queue_for_exchange_online("EX01")
    assert queue is not None
    run(org, call("Set-SendConnector", CONNECTOR, TlsCertificateName=PUBLIC_PIN))
    assert not run(org, call("Retry-Queue", Identity=queue.identity)).errors
    drained = org.queue_for_exchange_online("EX01")
    assert drained is not None
    assert drained.message_count == 0


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"Filter": "NextHopDomain -eq"}, "Invalid filter syntax"),
    ({"Filter": "Status -eq 'Retry' -or Status -eq 'Ready'"}, "Invalid filter syntax"),
    ({"Filter": "Colour -eq 'blue'"}, "\"Colour\" is not a recognized filterable property"),
    ({}, "missing mandatory parameters: Identity"),
    ({"Filter": "Status -eq 'Retry'", "Identity": "EX01\\1"}, "Parameter set cannot be resolved"),
])
def test_retry_queue_argument_errors(org: ExchangeOrganisation, arguments: dict[str, Any],
                                     problem: str) -> None:
    result = run(org, call("Retry-Queue", **arguments))
    assert result.failed
    assert problem in result.errors[0].message


# ---------------------------------------------------------------------------- Select-Object

def test_select_object_keeps_python_types(org: ExchangeOrganisation) -> None:
    result = run(org, call("Get-ExchangeCertificate", thumb(org, "public-cert")),
                 call("Select-Object", Property=["Thumbprint", "Services", "RootCAType", "Status",
                                                 "NotAfter", "CertificateDomains", "Missing"]))
    (selected,) = result.output
    assert isinstance(selected, SelectedObject)
    assert selected.source_type_names[0] == \
        "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
    values = selected.properties
    assert list(values) == ["Thumbprint", "Services", "RootCAType", "Status", "NotAfter",
                            "CertificateDomains", "Missing"]
    assert values["Services"] == ExchangeService.IIS | ExchangeService.SMTP
    assert isinstance(values["Services"], ExchangeService)
    assert values["RootCAType"] is RootCAType.THIRD_PARTY
    assert values["Status"] is CertificateStatus.VALID
    assert isinstance(values["NotAfter"], datetime)
    assert values["CertificateDomains"] == ["mail.contoso.com", "autodiscover.contoso.com",
                                            "ex01.contoso.com"]
    assert values["Missing"] is None


def test_select_object_star_wildcards_and_first(org: ExchangeOrganisation) -> None:
    everything = run(org, call("Get-ExchangeCertificate"), call("Select-Object", "*")).output
    assert len(everything) == 4
    first = everything[0]
    assert isinstance(first, SelectedObject)
    assert {"Thumbprint", "Services", "ServicesStringForm", "HasPrivateKey", "IsSelfSigned",
            "Identity", "FriendlyName", "SignatureAlgorithm"} <= set(first.properties)
    assert first.properties["ServicesStringForm"] == "...WS."
    dates = run(org, call("Get-ExchangeCertificate"),
                call("Select-Object", Property="not*", First=2)).output
    assert len(dates) == 2
    assert set(dates[0].properties) == {"NotBefore", "NotAfter"}  # type: ignore[attr-defined]
    connector = run(org, call("Get-SendConnector"),
                    call("Select-Object", Property=["Name", "TlsCertificateName"])).output
    assert connector[0].properties == {"Name": CONNECTOR,  # type: ignore[attr-defined]
                                       "TlsCertificateName": None}


def test_services_string_form() -> None:
    assert services_string_form(ExchangeService.from_names("IMAP, POP, IIS, SMTP")) == "IP.WS."
    assert services_string_form(ExchangeService.SMTP | ExchangeService.FEDERATION) == "....SF"


# ---------------------------------------------------------------------------- Get-Command, log

def test_get_command(org: ExchangeOrganisation) -> None:
    (info,) = run(org, call("Get-Command", "Select-Object")).output
    assert isinstance(info, LabCommandInfoRecord)
    assert info.name == "Select-Object"
    assert "Property" in info.parameters
    assert len(run(org, call("Get-Command", Name="*-ExchangeCertificate")).output) == 3
    missing = run(org, call("Get-Command", "Group-Object"))
    assert not missing.failed
    assert missing.output == ()
    assert "Group-Object" in missing.errors[0].message


def test_call_log_records_every_cmdlet_with_its_outcome(org: ExchangeOrganisation) -> None:
    clock = Clock()
    org = ExchangeOrganisation(default_state(now=NOW), clock=clock)
    run(org, call("Get-ExchangeCertificate"))
    clock.now = NOW + timedelta(minutes=1)
    run(org, call("Enable-ExchangeCertificate", thumb(org, "internal-cert"), Services="POP"))
    run(org, call("Get-Mailbox"))
    run(org, call("Remove-ExchangeCertificate", thumb(org, "exchange-self-signed"),
                  Confirm=False))
    log = org.call_log()
    assert [entry.cmdlet for entry in log] == ["Get-ExchangeCertificate",
                                               "Enable-ExchangeCertificate", "Get-Mailbox",
                                               "Remove-ExchangeCertificate"]
    assert all(entry.user == USER for entry in log)
    assert log[0].time == NOW
    assert log[1].time == NOW + timedelta(minutes=1)
    assert log[0].outcome == "ok"
    assert log[1].outcome.startswith("ok:")
    assert "additive" in log[1].outcome
    assert log[1].parameters == ((None, thumb(org, "internal-cert")), ("Services", "POP"))
    assert log[2].outcome.startswith("failed:")
    assert log[3].outcome.startswith("error:")


# ---------------------------------------------------------------------------- several servers

def test_a_connector_shared_by_two_servers() -> None:
    document = yaml.safe_load(yaml.safe_dump({
        "tenant": "contoso",
        "cas": [{"id": "public-root", "public": True}],
        "servers": [
            {"name": name, "fqdn": f"{name.lower()}.contoso.com",
             "certificates": [cert("public", "public-root",
                                   ["mail.contoso.com", f"{name.lower()}.contoso.com"], "-9d")],
             "send_connectors": [{"name": CONNECTOR, "cloud": True,
                                  "tls_certificate_name": "public"}],
             "queue_messages": 3}
            for name in ("EX01", "EX02")],
    }))
    state = parse_state(yaml.safe_dump(document), source="two.yaml", now=NOW)
    org = make_org(state)
    (connector,) = run(org, call("Get-SendConnector")).output
    assert connector.source_transport_servers == ("EX01", "EX02")  # type: ignore[attr-defined]
    for name in ("EX01", "EX02"):
        queue = org.queue_for_exchange_online(name)
        assert queue is not None
        assert queue.identity.startswith(f"{name}\\")
        assert queue.message_count == 0
    certs = run(org, call("Get-ExchangeCertificate", Server="EX02")).output
    assert certs[0].server == "EX02"  # type: ignore[attr-defined]
