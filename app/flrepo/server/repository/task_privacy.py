"""The checks of a task's `privacy` settings that need the rest of the plan: the strategy's runtime
(SecAgg+ runs on Flower's Message API only) and the participants each round has (the DP noise is
calibrated to them; SecAgg+ shares keys among them). Each refusal names the field and says why."""

from __future__ import annotations

from flrepo.schemas.tasks import TaskIn
from flrepo.server.repository import items
from flrepo.server.repository.kinds import STRATEGIES
from flrepo.server.storage.db import Database
from flrepo.server.storage.errors import Invalid


async def check(db: Database, body: TaskIn) -> None:
    """Invalid (422) when the task's privacy settings cannot run with the rest of its plan."""
    privacy = body.privacy
    if privacy is None:
        return
    _check_with_compression(body)
    if privacy.dp is not None and body.min_participants is None:
        raise Invalid(
            "privacy.dp needs min_participants: Flower's DP wrappers calibrate the noise to the number of "
            "sites sampled each round"
        )
    dp = privacy.dp
    if dp is not None and dp.mode.endswith("-adaptive") and body.min_participants is not None:
        # Flower splits noise_multiplier between the clipped count and the update: the count's
        # noise must leave some for the update (flwr compute_adaptive_noise_params).
        stddev = dp.clipped_count_stddev if dp.clipped_count_stddev is not None else body.min_participants / 20
        if 2 * stddev <= dp.noise_multiplier:
            raise Invalid(
                f"privacy.dp.clipped_count_stddev: {stddev:g} (default min_participants / 20) leaves no noise for "
                f"the update at noise_multiplier {dp.noise_multiplier:g}: it must exceed noise_multiplier / 2"
            )
    secure = privacy.secure_aggregation
    if secure is None:
        return
    strategy = await items.get(db, STRATEGIES, body.strategy.model_dump())
    runtime = (strategy.get("meta") or {}).get("runtime")
    if runtime != "message":
        raise Invalid(
            f"privacy.secure_aggregation: strategy {body.strategy.strategy_name!r} runs on Flower's "
            f"{'legacy gRPC' if runtime == 'legacy' else 'unknown (no meta.runtime)'} runtime, and Flower's SecAgg+ "
            "exists only on the Message API: choose a message-* strategy"
        )
    sites = body.min_participants
    if sites is None or sites < 3:
        raise Invalid(
            "privacy.secure_aggregation needs min_participants of at least 3: SecAgg+ shares each site's key "
            "among the others, and with fewer sites their sum would reveal each update"
        )
    if isinstance(secure.num_shares, int) and secure.num_shares > sites:
        raise Invalid(f"privacy.secure_aggregation.num_shares ({secure.num_shares}) exceeds min_participants ({sites})")


def _check_with_compression(body: TaskIn) -> None:
    """A compressed uplink with a mechanism that reads each site's plain update at the site: Flower's
    client-side clipping mods and SecAgg+ work on the arrays the site sends, which a compressed update
    no longer is. Server-side DP works with it (the collector decodes before the DP wrapper)."""
    compression, privacy = body.compression, body.privacy
    if compression is None or privacy is None or compression.uplink == "none":
        return
    if privacy.secure_aggregation is not None:
        raise Invalid(
            f"compression.uplink {compression.uplink!r} cannot be combined with privacy.secure_aggregation: SecAgg+ "
            "masks and sums the plain arrays each site sends; use uplink 'none' with it"
        )
    if privacy.dp is not None and privacy.dp.mode.startswith("client-"):
        raise Invalid(
            f"compression.uplink {compression.uplink!r} cannot be combined with privacy.dp mode {privacy.dp.mode!r}: "
            "Flower's client-side clipping clips the plain update at the site; use a server-* mode or uplink 'none'"
        )
