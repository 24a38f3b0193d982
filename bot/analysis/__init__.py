"""Pure analysis of Exchange server snapshots: trust, outbound prediction, findings, plan.

Everything here is a function of (snapshot, trust store, now); only :mod:`.trust_store` reads
files.
"""

from bot.analysis.analyse import analyse_certificate, analyse_server, unreachable_server
from bot.analysis.json_report import report_to_json, server_to_json
from bot.analysis.model import (
    CandidateRanking,
    CertificateAnalysis,
    Finding,
    FindingCode,
    FleetReport,
    OutboundSelection,
    PlanScope,
    PlanStep,
    RemediationPlan,
    ServerAnalysis,
    Severity,
    StepKind,
    Trust,
    TrustAssessment,
    Verdict,
)
from bot.analysis.names import certificate_matches, name_matches
from bot.analysis.outbound import predict_outbound_certificate
from bot.analysis.plan import build_plan, plan_hash
from bot.analysis.trust import TrustStore, assess_trust
from bot.analysis.trust_store import TrustStoreError, load_trust_store
from bot.analysis.verdict import build_report, exit_code, server_verdict

__all__ = [
    "CandidateRanking",
    "CertificateAnalysis",
    "Finding",
    "FindingCode",
    "FleetReport",
    "OutboundSelection",
    "PlanScope",
    "PlanStep",
    "RemediationPlan",
    "ServerAnalysis",
    "Severity",
    "StepKind",
    "Trust",
    "TrustAssessment",
    "TrustStore",
    "TrustStoreError",
    "Verdict",
    "analyse_certificate",
    "analyse_server",
    "assess_trust",
    "build_plan",
    "build_report",
    "certificate_matches",
    "exit_code",
    "load_trust_store",
    "name_matches",
    "plan_hash",
    "predict_outbound_certificate",
    "report_to_json",
    "server_to_json",
    "server_verdict",
    "unreachable_server",
]
