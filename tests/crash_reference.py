"""The seed's reference detector (seed 000 §4), kept as written, as the test reference.

``CrashPhysicsDetector`` below is the seed's pandas code with only its comments translated;
``sim.regime`` must reproduce its labels on every day of the shipped S&P 500 series.
"""

import pandas as pd


class CrashPhysicsDetector:
    def __init__(self, price_series, vvix_series, window=5):
        self.price = price_series
        self.vvix = vvix_series
        self.window = window

    def calculate_kinematics(self):
        # Velocity: dS/dt
        velocity = self.price.diff(1).ewm(span=self.window).mean()
        # Acceleration: d^2S/dt^2
        acceleration = velocity.diff(1).ewm(span=self.window).mean()
        # Jerk: d^3S/dt^3 (optional, for early warning)
        jerk = acceleration.diff(1).ewm(span=self.window).mean()
        return velocity, acceleration, jerk

    def detect_regime(self):
        vel, acc, _ = self.calculate_kinematics()
        vvix_slope = self.vvix.diff(1).ewm(span=self.window).mean()

        signals = []
        for i in range(len(self.price)):
            # accelerating crash
            is_accelerating_crash = (vel.iloc[i] < 0) and (acc.iloc[i] < 0)
            # inertia fading (phase transition starts): velocity still negative, acceleration turning positive
            is_decelerating_crash = (vel.iloc[i] < 0) and (acc.iloc[i] > 0)
            # fear receding
            is_fear_receding = (vvix_slope.iloc[i] < 0)

            if is_accelerating_crash:
                signals.append("REGIME_ACCELERATION (HODL)")
            elif is_decelerating_crash and is_fear_receding:
                signals.append("PHASE_TRANSITION (MONETIZE)")
            else:
                signals.append("NO_SIGNAL")

        return signals


def reference_labels(price: pd.Series, vvix: pd.Series, window=5) -> list[str]:
    return CrashPhysicsDetector(price, vvix, window).detect_regime()
