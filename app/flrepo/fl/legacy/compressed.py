"""The task's compression (flrepo.fl.core.compression) carried in the legacy runtime's `Parameters`.

`Parameters(tensors, tensor_type)` is Flower's public carrier: plain arrays are np.save bytes of
type "numpy.ndarray"; a compressed update is the codec's blobs, one a tensor, of type
"flrepo.<codec>". Flower passes both through untouched; only flrepo's ends decode them, and a
site that sends plain arrays (an older flrepo) is taken as it is.

`ServerSide` is the collector's half: it compresses the instructions (fp16 downlink), rebuilds each
site's weights from its reply before the task's strategy aggregates, and counts the bytes each way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays

from flrepo.fl.core import compression
from flrepo.fl.core.codecs import CodecError
from flrepo.fl.core.compression import TrafficMeter, Weights

log = logging.getLogger(__name__)
TENSOR_PREFIX = "flrepo."


def to_parameters(codec: str, blobs: list[bytes]) -> Parameters:
    return Parameters(tensors=list(blobs), tensor_type=TENSOR_PREFIX + codec)


def codec_of(parameters: Parameters) -> str | None:
    """The codec of compressed parameters; None for plain arrays."""
    kind = parameters.tensor_type or ""
    return kind.removeprefix(TENSOR_PREFIX) if kind.startswith(TENSOR_PREFIX) else None


def payload(parameters: Parameters) -> int:
    """The bytes the tensors take on the wire."""
    return sum(len(t) for t in parameters.tensors)


def weights_of(parameters: Parameters) -> tuple[Weights, float]:
    """The weights parameters carry, compressed or not; the decoding ms."""
    codec = codec_of(parameters)
    if codec is None:
        return parameters_to_ndarrays(parameters), 0.0
    return compression.received_weights(codec, parameters.tensors)


class ServerSide(TrafficMeter):
    """The collector's half of a task's compression on the legacy runtime."""

    _sent: dict[str, Weights]  # client id -> the weights it decodes

    def outgoing(self, instructions: Sequence[tuple[Any, Any]]) -> None:
        """Each instruction's parameters as the task's downlink sends them (in place), counted."""
        encoded: dict[int, tuple[Parameters, Weights, int]] = {}  # strategies share one instruction
        for proxy, ins in instructions:
            key = id(ins.parameters)
            if key not in encoded:
                encoded[key] = self._encode(ins.parameters)
            sent_parameters, sent, raw = encoded[key]
            encoded[id(sent_parameters)] = encoded[key]
            ins.parameters = sent_parameters
            self._sent[str(proxy.cid)] = sent
            self.round.bytes_down += payload(sent_parameters)
            self.round.bytes_down_raw += raw

    def _encode(self, parameters: Parameters) -> tuple[Parameters, Weights, int]:
        weights = parameters_to_ndarrays(parameters)
        raw = compression.plain_size(weights)
        if self.spec.downlink == "none":
            return parameters, weights, raw
        blobs, sent, ms = compression.downlink(weights, self.spec.downlink)
        self.round.encode_ms += ms
        return to_parameters(self.spec.downlink, blobs), sent, raw

    def incoming(self, results: list[tuple[Any, Any]]) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
        """The results with each site's weights rebuilt (sent + decoded delta), counted; and those whose
        update does not decode (failures: one broken site must not fail the round)."""
        good, bad = [], []
        for proxy, res in results:
            self.round.site_metrics(res.metrics)
            self.round.bytes_up += payload(res.parameters)
            codec = codec_of(res.parameters)
            if codec is None:  # plain arrays: an older site, or no uplink compression
                self.round.bytes_up_raw += payload(res.parameters)
                good.append((proxy, res))
                continue
            try:
                weights, ms = compression.apply_delta(self._sent.get(str(proxy.cid), []), codec, res.parameters.tensors)
            except CodecError as exc:
                log.warning("client %s: its update does not decode (%s): counted as a failure", proxy.cid, exc)
                bad.append((proxy, res))
                continue
            self.round.decode_ms += ms
            self.round.bytes_up_raw += compression.plain_size(weights)
            res.parameters = ndarrays_to_parameters(weights)
            good.append((proxy, res))
        return good, bad
