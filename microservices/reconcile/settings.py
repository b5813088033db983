"""Reconcile settings (etc/quantum/reconcile.env; P33_QTY_TOLERANCE_STEPS lives in common.env)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class ReconcileSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "RECONCILE_")
    metrics_port: int = Field(default=8049, ge=0, le=65535)
    reconcile_interval_sec: float = Field(default=2.0, gt=0)
    reconcile_grace_sec: float = Field(default=5.0, ge=0)
    # 0: quantities are exact decimals, so a one-step difference is a real one (a close of a position the ledger
    # held one step larger leaves a phantom step that the next open would inherit, stop loss and all).
    reconcile_tolerance_steps: int = Field(default=0, ge=0)
    # P3.3's tolerance, read here too: reconcile must heal every difference P3.3 holds a symbol for.
    p33_qty_tolerance_steps: int = Field(default=1, ge=0)
    reconcile_snapshot_max_age_sec: float = Field(default=3.0, gt=0)

    @property
    def heal_tolerance_steps(self) -> int:
        """The tighter of the two tolerances: a difference P3.3 denies on is never 'agreement' here."""
        return min(self.reconcile_tolerance_steps, self.p33_qty_tolerance_steps)
