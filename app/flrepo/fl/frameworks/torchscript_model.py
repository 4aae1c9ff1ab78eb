"""The `pytorch` client for aerOS's model files: a ZIP archive holding `scripted_model.pt`, a TorchScript
module (`torch.jit.save`), as aerOS's local operations load it (`torch.jit.load('temp/scripted_model.pt')`
after extracting the archive, `application/src/builders/pytorch_builder.py`).

TorchScript is a program in TorchScript's own language with its tensors: `torch.jit.load` runs none of
the uploader's Python. The module trains like the torch.export one (same loop, losses and metrics), and
the trained model is written back as an aerOS archive, so aerOS's local operations load it too.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flrepo.fl.frameworks.aeros_archives import SCRIPTED_MODEL, scripted_member
from flrepo.fl.frameworks.base import ModelError
from flrepo.fl.frameworks.torch_model import TorchModel


class TorchScriptModel(TorchModel):
    library = "pytorch"
    suffix = ".zip"

    def __init__(self, module: torch.jit.ScriptModule) -> None:  # a module, not a torch.export program
        self.module = module  # type: ignore[assignment]  # trained through the same nn.Module interface
        self.names = list(module.state_dict())

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> TorchScriptModel:
        try:
            with zipfile.ZipFile(path) as archive:
                member = scripted_member(archive.namelist())
                if member is None:
                    raise ModelError(f"the ZIP archive holds no {SCRIPTED_MODEL}")
                data = archive.read(member)
            with warnings.catch_warnings():  # TorchScript is deprecated, and it is what aerOS stores
                warnings.simplefilter("ignore", FutureWarning)
                return cls(torch.jit.load(io.BytesIO(data), map_location="cpu"))
        except ModelError:
            raise
        except Exception as exc:  # torch raises many kinds of errors for a file that is not TorchScript
            raise ModelError(f"not an aerOS TorchScript archive: {type(exc).__name__}: {str(exc)[:200]}") from None

    def sample_shape(self) -> tuple[int, ...] | None:
        return None  # TorchScript records no input shapes

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(self.module, buffer)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(SCRIPTED_MODEL, buffer.getvalue())
