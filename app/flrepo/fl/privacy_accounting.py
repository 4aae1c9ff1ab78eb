"""The privacy a task's training spends, for either Flower runtime: Flower's RDP accountant
(flwr.supercore.privacy_accounting, whose backend is dp-accounting, Flower's `dp` extra) composes
one Gaussian release per aggregated round, and every round record, the training result and the
published model say what was spent.

Accounting model: every round releases one noisy aggregate of the sampled sites' clipped updates,
with the task's noise_multiplier; no privacy amplification by sampling is claimed (Flower's
`no-amplification`, the model its own accounted fixed-clipping wrappers require). For the adaptive
modes the clipped-count release and the update release share that one noise_multiplier (Flower's
`compute_adaptive_noise_params` splits it), so the same event accounts for both. A resumed task
composes the rounds it had done before going on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from flrepo.fl.core.link import TaskLink

log = logging.getLogger(__name__)
SECAGG = "secagg+"  # the mechanism name of Flower's SecAgg+ in status, results and model meta
S = TypeVar("S")  # the runtime's strategy type: flwr.server.strategy or flwr.serverapp.strategy


def sampled_sites(task: dict[str, Any]) -> int:
    """The sites each round is calibrated to: the task's min_participants (required with dp at
    creation). More sites only lower each one's share, so the noise is never too small."""
    return max(1, int(task.get("min_participants") or 1))


class Ledger:
    """ε spent so far by a task with `dp` settings, from Flower's RDP accountant."""

    def __init__(self, dp: dict[str, Any], sites: int) -> None:
        self.dp = dp
        self.delta = float(dp.get("target_delta") or 1e-5)
        config = PrivacyConfig(
            target_delta=self.delta,
            population_size=sites,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
        self.accountant = RdpAccountant(config)
        self.event = GaussianPrivacyEvent(
            noise_multiplier=float(dp["noise_multiplier"]), sample_size=sites, population_size=sites
        )

    @property
    def rounds(self) -> int:
        return self.accountant.num_releases

    def released(self, count: int = 1) -> None:
        """`count` more rounds released a noisy aggregate."""
        if count > 0:
            self.accountant.compose(self.event, count)
            log.info("privacy spent: ε=%.4f at δ=%g after %d rounds", self.epsilon(), self.delta, self.rounds)

    def epsilon(self) -> float:
        return float(self.accountant.get_epsilon(self.delta)) if self.rounds else 0.0

    def guarantee(self) -> dict[str, Any]:
        """What the trained model promises (its meta.privacy, the training result's `privacy`)."""
        return {
            "mechanism": f"dp-{self.dp['mode']}",
            "epsilon": round(self.epsilon(), 6),
            "delta": self.delta,
            "rounds": self.rounds,
            "noise_multiplier": float(self.dp["noise_multiplier"]),
            "clipping_norm": self.dp.get("clipping_norm"),
            "accountant": "flwr rdp (no amplification)",
        }


def secure_guarantee(secure: dict[str, Any], rounds: int) -> dict[str, Any]:
    """SecAgg+ promises no ε: that the collector saw only the sum of the sites' updates."""
    return {"mechanism": SECAGG, "epsilon": None, "delta": None, "rounds": rounds, **secure}


def mechanisms(privacy: dict[str, Any]) -> list[str]:
    """The mechanisms a task's `privacy` settings name: `dp-<mode>`, `secagg+`, or both."""
    dp, secure = privacy.get("dp"), privacy.get("secure_aggregation")
    return [*([f"dp-{dp['mode']}"] if dp else []), *([SECAGG] if secure else [])]


def secure_settings(task: dict[str, Any]) -> dict[str, Any]:
    """The SecAgg+ settings a task runs with ({} without SecAgg+). Under DP every site's weight is 1
    (the sites send 1: the noise is calibrated to a plain mean), so 1 is the largest weight and is
    quantized exactly."""
    privacy = task.get("privacy") or {}
    secure = dict(privacy.get("secure_aggregation") or {})
    if secure and privacy.get("dp"):
        secure["max_weight"] = 1.0
    return secure


def guarantee_of(task: dict[str, Any], ledger: Ledger | None) -> dict[str, Any] | None:
    """The task's privacy guarantee after its training (None: it had no privacy settings). With DP
    and SecAgg+ both, the DP guarantee (ε, δ) with SecAgg+'s settings under `secure_aggregation`
    and `mechanism` naming both (`dp-client-fixed+secagg+`)."""
    privacy, secure = task.get("privacy") or {}, secure_settings(task)
    if ledger is not None:
        guarantee = ledger.guarantee()
        if secure:
            named = mechanisms(privacy)
            guarantee |= {"mechanism": "+".join(named), "mechanisms": named, "secure_aggregation": secure}
        return guarantee
    if secure:
        return secure_guarantee(secure, int(task["rounds"]))
    return None


class AccountedLink(TaskLink):
    """The task's link with ε added to every round record when the round ends (the ledger has composed
    the round by then: the aggregation that released it ran first; the report itself may be sent
    later, after further rounds)."""

    def __init__(self, link: TaskLink, ledger: Ledger) -> None:
        super().__init__(link.repo, link.task_id, link.timing)
        self.ledger = ledger

    def round_record(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "epsilon": round(self.ledger.epsilon(), 6)}


@dataclass
class Private(Generic[S]):
    """The strategy Flower runs (the task's, wrapped), the ledger, what the status shows and what the
    sites are told each training round (`config`: which clipping to run)."""

    strategy: S
    task: dict[str, Any]
    ledger: Ledger | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def link(self, link: TaskLink) -> TaskLink:
        """The link the round reports go through: with ε in each round record under DP."""
        return AccountedLink(link, self.ledger) if self.ledger is not None else link

    def guarantee(self) -> dict[str, Any] | None:
        """What the published model promises (None without privacy settings)."""
        return guarantee_of(self.task, self.ledger)


def adaptive_arguments(dp: dict[str, Any]) -> dict[str, Any]:
    """The task's adaptive-clipping settings as keywords of Flower's adaptive DP wrappers (either
    runtime's); unset ones are left to Flower's defaults."""
    given = {
        "initial_clipping_norm": dp.get("clipping_norm"),
        "target_clipped_quantile": dp.get("target_clipped_quantile"),
        "clip_norm_lr": dp.get("clip_norm_lr"),
        "clipped_count_stddev": dp.get("clipped_count_stddev"),
    }
    return {k: v for k, v in given.items() if v is not None}
