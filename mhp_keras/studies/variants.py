"""The paper's variants by its names: which settings of the one model each column of its table is.

VAE, VAE-GAN, MDN-H, MHP-H, MHP-WTA-H, ConAD-H and MDN+ConAD-H (docs/design.md, "The paper's
variants") are settings of `ConAD`; `parse_variants` reads `eval.variants` and checks that the
config can make them, before TensorFlow starts, for `mhp_keras.studies.ablation`.
"""

from __future__ import annotations

import copy
import dataclasses
import re

from mhp_keras.errors import ConfigError

VARIANT_PATTERNS = (
    "vae, vae-gan, mdn-H, mhp-H, mhp-wta-H, conad-H, mdn+conad-H (H >= 2 hypotheses, e.g. conad-8)"
)
_VARIANT = re.compile(r"vae|vae-gan|(mdn|mhp|mhp-wta|conad|mdn\+conad)-(\d+)")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One column of the paper's table.

    `hypotheses`: model.hypotheses, or None to keep the config's. `adversarial`: False trains no
    discriminator (loss.adv_weight = 0), True keeps the config's loss.adv_weight (which must then
    be > 0), None keeps the config as it is. `eps`: loss.eps, or None to keep the config's (the
    paper's MHP is the eps-relaxed WTA of Rupprecht et al., its MHP-WTA and ConAD the hard one,
    eps = 0).
    `mixture`: loss.mixture ("mdn" for the paper's MDN-H and MDN+ConAD-H), or None to keep it.
    """

    name: str
    hypotheses: int | None = None
    adversarial: bool | None = None
    eps: float | None = None
    mixture: str | None = None

    def apply(self, config):
        """A copy of `config` with this variant's settings."""
        config = copy.deepcopy(config)
        if self.hypotheses is not None:
            config.model.hypotheses = self.hypotheses
        if self.adversarial is False:
            config.loss.adv_weight = 0.0
        if self.eps is not None:
            config.loss.eps = self.eps
        if self.mixture is not None:
            config.loss.mixture = self.mixture
        return config


# benchmark_classes: the config as given, in no variant folder of its own.
AS_GIVEN = Variant("")


def parse_variant(text: str) -> Variant:
    """`vae`, `vae-gan`, `mdn-H`, `mhp-H`, `mhp-wta-H`, `conad-H` or `mdn+conad-H`, in any case,
    as a Variant with a canonical (lower-case) name: the paper's names."""
    name = text.strip().lower()
    match = _VARIANT.fullmatch(name)
    if match is None:
        raise ConfigError(
            f"eval.variants names an unknown variant {text.strip()!r}: expected comma-separated "
            f"names of the forms {VARIANT_PATTERNS}, in any case."
        )
    if name == "vae":
        return Variant("vae", hypotheses=1, adversarial=False, mixture="wta")
    if name == "vae-gan":
        return Variant("vae-gan", hypotheses=1, adversarial=True, mixture="wta")
    prefix, hypotheses = match.group(1), int(match.group(2))
    adversarial = prefix.endswith("conad")
    if hypotheses < 2:
        single = "vae-gan" if adversarial else "vae"
        raise ConfigError(
            f"eval.variants: {text.strip()!r} has {hypotheses} hypotheses, but H must be >= 2; "
            f"with one hypothesis that model is {single!r}."
        )
    # The paper's ConAD trains its heads by the hard WTA: "only the best matching hypothesis
    # receives all of the learning signals from the NLL-loss" (its eq. (2)); D, not eps, keeps
    # the losing heads in realistic regions. MHP-H is the eps-relaxed form (the config's eps).
    eps = 0.0 if prefix in ("mhp-wta", "conad") else None
    # Every variant states its mixture, so a config's loss.mixture=mdn cannot turn ConAD into MDN.
    mix = "mdn" if prefix.startswith("mdn") else "wta"
    return Variant(f"{prefix}-{hypotheses}", hypotheses, adversarial, eps=eps, mixture=mix)


def parse_variants(config) -> list[Variant]:
    """The variants of eval.variants; empty: the paper's seven at model.hypotheses."""
    names = [n for n in str(config.eval.variants).split(",") if n.strip()]
    if not names:
        h = int(config.model.hypotheses)
        several = [f"mdn-{h}", f"mhp-{h}", f"mhp-wta-{h}", f"conad-{h}", f"mdn+conad-{h}"]
        several = several if h >= 2 else []
        names = ["vae", "vae-gan", *several]
    variants = [parse_variant(n) for n in names]
    seen = [v.name for v in variants]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ConfigError(f"eval.variants={config.eval.variants!r} names {twice} twice.")
    adversarial = [v.name for v in variants if v.adversarial]
    if adversarial and not float(config.loss.adv_weight) > 0:
        raise ConfigError(
            f"eval.variants has {adversarial}, which train a discriminator with weight "
            f"loss.adv_weight, but loss.adv_weight={config.loss.adv_weight}: set it > 0 (the "
            "paper's weight is 0.1, the default), or compare vae and mhp-wta-H only."
        )
    relaxed = [v.name for v in variants if v.name.startswith("mhp-") and v.eps is None]
    if relaxed and not float(config.loss.eps) > 0:
        raise ConfigError(
            f"eval.variants has {relaxed}, the eps-relaxed WTA, but loss.eps={config.loss.eps}: "
            "set it > 0 (the default is 0.05), or use mhp-wta-H for the hard WTA."
        )
    return variants
