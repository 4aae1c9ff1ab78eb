"""A task's `privacy` settings: differential privacy (Flower's DP strategy wrappers and clipping
mods) and secure aggregation (Flower's SecAgg+), checked when the task is created.

The checks here need only the settings themselves; those that need the rest of the task (the
strategy's runtime, min_participants) are in flrepo.server.repository.task_privacy. The collector
builds Flower's objects from these settings (flrepo.fl.message.privacy, flrepo.fl.legacy.privacy).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from flrepo.schemas.strict import StrictBody

DpMode = Literal["server-fixed", "server-adaptive", "client-fixed", "client-adaptive"]
ADAPTIVE_ONLY = ("target_clipped_quantile", "clip_norm_lr", "clipped_count_stddev")
# Flower's SecAgg+ masks in [0, modulus_range) with modulus_range 2**32: the quantized values must fit.
SECAGG_MODULUS_RANGE = 2**32


class DpSettings(StrictBody):
    """Gaussian noise on the aggregate, updates clipped on the collector (server-*) or at each site
    (client-*, Flower's fixedclipping_mod / adaptiveclipping_mod), with a fixed or an adaptive
    clipping norm. The budget spent is accounted with Flower's RDP accountant at `target_delta`."""

    mode: DpMode
    noise_multiplier: float = Field(gt=0, le=1000, description="Noise standard deviation over the clipping norm.")
    clipping_norm: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Fixed modes: the clipping norm (required). Adaptive modes: the initial norm (default 0.1).",
    )
    target_delta: float = Field(default=1e-5, gt=0, lt=1, description="The δ at which ε is reported.")
    target_clipped_quantile: float | None = Field(
        default=None, ge=0, le=1, description="Adaptive modes: the share of updates to clip (default 0.5)."
    )
    clip_norm_lr: float | None = Field(
        default=None, gt=0, le=100, description="Adaptive modes: the clipping norm's learning rate (default 0.2)."
    )
    clipped_count_stddev: float | None = Field(
        default=None,
        ge=0,
        le=1e6,
        description="Adaptive modes: noise on the clipped count (default: Flower's, num_sampled_clients / 20).",
    )

    @model_validator(mode="after")
    def _mode_settings(self) -> DpSettings:
        adaptive = self.mode.endswith("-adaptive")
        if not adaptive and self.clipping_norm is None:
            raise ValueError(f"mode {self.mode!r} needs clipping_norm")
        if not adaptive:
            given = [name for name in ADAPTIVE_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for the adaptive modes, not {self.mode!r}")
        return self


class SecureAggregationSettings(StrictBody):
    """Flower's SecAgg+ (Message-API runtime only): each site masks its quantized, weighted update;
    the collector learns only their sum."""

    num_shares: int | float = Field(
        gt=0, description="Shares of each site's key: an integer > 2, or a share (0, 1] of the sampled sites."
    )
    reconstruction_threshold: int | float = Field(
        gt=0,
        description="Shares needed to reconstruct a key (integer < num_shares, or a share (0, 1] of num_shares): "
        "the sites that may drop out of a round is num_shares minus this.",
    )
    clipping_range: float = Field(default=8.0, gt=0, le=1e6, description="Parameters are clipped to ±this.")
    quantization_range: int = Field(
        default=4194304, gt=0, lt=SECAGG_MODULUS_RANGE, description="Integers each parameter is quantized to."
    )
    max_weight: float = Field(
        default=1000.0,
        gt=0,
        le=1e9,
        description="The largest site weight (training samples) quantized exactly; with dp every site's weight "
        "is 1 and so is this.",
    )

    @model_validator(mode="after")
    def _shares(self) -> SecureAggregationSettings:
        shares, threshold = self.num_shares, self.reconstruction_threshold
        if isinstance(shares, float) and shares > 1:
            raise ValueError("num_shares as a share of the sampled sites must be in (0, 1]")
        if isinstance(shares, int) and shares <= 2:
            raise ValueError("num_shares as an integer must be greater than 2")
        if isinstance(threshold, float) and threshold > 1:
            raise ValueError("reconstruction_threshold as a share of num_shares must be in (0, 1]")
        if isinstance(threshold, int) and isinstance(shares, int) and threshold >= shares:
            raise ValueError("reconstruction_threshold must be less than num_shares")
        return self


class PrivacySettings(StrictBody):
    """A task's privacy: differential privacy, secure aggregation, or both (client-side DP only: see
    `_compatible`)."""

    dp: DpSettings | None = None
    secure_aggregation: SecureAggregationSettings | None = None

    @model_validator(mode="after")
    def _compatible(self) -> PrivacySettings:
        if self.dp is None and self.secure_aggregation is None:
            raise ValueError("give dp, secure_aggregation or both")
        if self.dp is not None and self.secure_aggregation is not None and self.dp.mode.startswith("server-"):
            raise ValueError(
                f"dp mode {self.dp.mode!r} cannot be combined with secure_aggregation: server-side clipping needs "
                "each site's update in the clear, which SecAgg+ hides from the collector; use 'client-fixed' or "
                "'client-adaptive' (each site clips its own update before masking it)"
            )
        return self
