"""Training health in plain words: warnings about an adversarial game or a set of hypotheses that
has stopped working, while the losses still look finite.

Failures show in the epoch logs long before anything becomes NaN: the discriminator wins
almost every decision (it then gives the generator no useful gradient, and in the runs that
diverged its accuracy sat near 1.0 for epochs first), and one hypothesis wins almost every image
(the other heads then learn almost nothing, which defeats the multiple hypotheses); D's
gradient can be negligible beside the NLL's; and a head can draw a pattern instead of an image
(`head_sharpness_max`, from the mechanism diagnostics). The callback
says each once, with the setting to change, and adds the signals to the epoch logs so that
TensorBoard and history.csv carry them.
"""

from __future__ import annotations

import keras
from absl import logging

from mhp_keras.config.defaults import base_config
from mhp_keras.training.diagnostics import head_shares

# The limits' defaults are the config's (`train.health_*`), read from where they are defined.
_DEFAULTS = base_config()
_TRAIN, _LOSS = _DEFAULTS.train, _DEFAULTS.loss
D_ACC_KEY = "health_d_acc"  # the lower of D's accuracies on real and on fake images
HEAD_SHARE_KEY = "health_top_head_share"  # the share of images (or pixels) won by the top head


def d_accuracy(logs) -> float | None:
    if "d_acc_real" not in logs or "d_acc_fake" not in logs:
        return None
    return min(float(logs["d_acc_real"]), float(logs["d_acc_fake"]))


class TrainingHealth(keras.callbacks.Callback):
    """Warns once when D's accuracy on both real and fake images stays above `d_acc_limit` for
    `patience` epochs in a row, and once when one of several heads wins more than
    `head_share_limit` of the training images for `patience` epochs in a row, counting from
    epoch `patience` + 1 (a warm-up as long as the patience).

    Place it before the loggers in the callback list: it adds `health_d_acc` and
    `health_top_head_share` to each epoch's logs. `warnings` holds what was said.
    """

    def __init__(
        self,
        adversarial: bool,
        d_acc_limit: float = _TRAIN.health_d_acc,
        head_share_limit: float = _TRAIN.health_head_share,
        patience: int = _TRAIN.health_epochs,
        adv_share_limit: float = _TRAIN.health_adv_share,
        head_sharpness_limit: float = _TRAIN.health_head_sharpness,
        eps: float = _LOSS.eps,
        evolving_wta_epochs: int = _LOSS.evolving_wta_epochs,
    ):
        super().__init__()
        self.adversarial = adversarial
        # The run's own WTA settings, so that the advice names a change it has not made yet.
        self.eps = float(eps)
        self.evolving_wta_epochs = int(evolving_wta_epochs)
        self.d_acc_limit = float(d_acc_limit)
        self.head_share_limit = float(head_share_limit)
        self.adv_share_limit = float(adv_share_limit)
        self.head_sharpness_limit = float(head_sharpness_limit)
        self._last_share: float | None = None  # the epoch's adv_grad_share, when measured
        self.patience = int(patience)
        self.warnings: list[str] = []
        self._streaks = {"discriminator": 0, "heads": 0, "reach": 0, "pattern": 0}
        self._said: set[str] = set()

    @classmethod
    def from_config(cls, config) -> TrainingHealth:
        """The callback with an experiment config's limits (`train.health_*`)."""
        t = config.train
        return cls(
            adversarial=config.loss.adv_weight > 0,
            d_acc_limit=t.health_d_acc,
            head_share_limit=t.health_head_share,
            patience=t.health_epochs,
            adv_share_limit=t.health_adv_share,
            head_sharpness_limit=t.health_head_sharpness,
            eps=config.loss.eps,
            evolving_wta_epochs=config.loss.evolving_wta_epochs,
        )

    def _losing_heads_advice(self) -> str:
        """What makes heads that rarely win learn the images: the evolving WTA, if the run has
        none, and a larger share of the NLL for the losers (`loss.eps`), from where it is."""
        if self.eps > 0:
            # Twice the run's, kept inside eps's range [0, 1).
            higher = min(2 * self.eps, (1 + self.eps) / 2)
            eps = f"raise config.loss.eps above its {self.eps:g} (e.g. to {higher:.2g})"
        else:
            eps = "set config.loss.eps > 0 (e.g. 0.05)"
        if self.evolving_wta_epochs > 0:
            return f"The run already uses the evolving WTA; {eps}, or use fewer heads."
        return (
            "Set config.loss.evolving_wta_epochs (e.g. half of train.epochs) so that every "
            f"head learns the images before the WTA takes over, or {eps}."
        )

    def _reach(self, epoch: int, logs: dict, settled: bool) -> None:
        """The warning that D's gradient is negligible beside the NLL's (`adv_grad_share`)."""
        share = logs.get("adv_grad_share")
        if not self.adversarial or share is None:
            return
        self._last_share = float(share)
        self._observe(
            "reach",
            settled and self._last_share < self.adv_share_limit,
            lambda epochs: (
                f"Training health: the discriminator does not reach the generator: its gradient "
                f"on the decoder's last shared layer has been {self._last_share:.1e} of the NLL's "
                f"or less for {epochs} epochs (epoch {epoch + 1}, limit "
                f"{self.adv_share_limit:g}), so the heads train as a plain VAE's. Raise "
                "config.loss.adv_weight (e.g. 10x), and use config.loss.adv_balance=adaptive "
                "if it is fixed."
            ),
        )

    def _pattern(self, epoch: int, logs: dict, settled: bool) -> None:
        """The warning that a head draws a pattern, not an image (`head_sharpness_max`)."""
        value = logs.get("head_sharpness_max")
        if value is None:
            return
        value = float(value)
        self._observe(
            "pattern",
            settled and value > self.head_sharpness_limit,
            lambda epochs: (
                f"Training health: a hypothesis has drawn {value:.1f} times the inputs' "
                f"high-frequency energy for {epochs} epochs (epoch {epoch + 1}, limit "
                f"{self.head_sharpness_limit:g}): a pattern, not an image. A head that rarely "
                "wins learns little of the images (nothing under the hard WTA, only "
                "config.loss.eps of the NLL otherwise) and drifts where the discriminator "
                "pushes it. " + self._losing_heads_advice()
            ),
        )

    def _dominance_advice(self) -> str:
        """What to change when D wins everything: if its gradient does not even reach the
        generator, weakening D does not help; the adversarial term must weigh more."""
        if self._last_share is not None and self._last_share < self.adv_share_limit:
            return (
                "Its gradient on the decoder is negligible (adv_grad_share "
                f"{self._last_share:.1e}): raise config.loss.adv_weight rather than weakening D."
            )
        return "Lower config.loss.adv_weight or config.train.d_lr (e.g. halve them)."

    def _observe(self, kind: str, high: bool, message) -> None:
        """Counts the epochs in a row that `kind` was `high`; at `patience` of them, says
        `message(epochs)` (once per run)."""
        self._streaks[kind] = self._streaks[kind] + 1 if high else 0
        if self._streaks[kind] >= self.patience and kind not in self._said:
            self._said.add(kind)
            self.warnings.append(message(self._streaks[kind]))
            logging.warning("%s", self.warnings[-1])

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # The first `patience` epochs only log: early in training one head or D routinely wins
        # nearly everything for a few epochs (seen in healthy demo runs) before it evens out.
        settled = epoch >= self.patience
        self._reach(epoch, logs, settled)
        self._pattern(epoch, logs, settled)
        accuracy = d_accuracy(logs) if self.adversarial else None
        if accuracy is not None:
            logs[D_ACC_KEY] = accuracy
            self._observe(
                "discriminator",
                settled and accuracy > self.d_acc_limit,
                lambda epochs: (
                    f"Training health: the discriminator has won {accuracy:.0%} or more of its "
                    f"decisions on real and on fake images for {epochs} epochs (epoch "
                    f"{epoch + 1}); it no longer guides the decoder, and such runs can diverge. "
                    + self._dominance_advice()
                ),
            )
        shares = head_shares(logs)
        if len(shares) > 1:
            top = max(shares)
            logs[HEAD_SHARE_KEY] = top
            self._observe(
                "heads",
                settled and top > self.head_share_limit,
                lambda epochs: (
                    f"Training health: hypothesis {shares.index(top)} has won {top:.0%} of the "
                    f"training images for {epochs} epochs (epoch {epoch + 1}); the other "
                    f"{len(shares) - 1} heads learn almost nothing. " + self._losing_heads_advice()
                ),
            )
