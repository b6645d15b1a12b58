//! Quantization: world positions to fixed point within a zone's bounds, angles to one byte.
//!
//! Bounds of the round trip (tested exhaustively over the grid and by property tests):
//! - a position inside the bounds comes back within half a step per axis, where a step is
//!   `(max - min) / 65535` (1000 world units → 0.0076 units per step);
//! - a position outside the bounds is clamped to them first;
//! - an angle comes back within half a step of 2π/256 (0.703°).

use std::f32::consts::TAU;

/// Number of fixed-point steps per axis.
pub const POSITION_STEPS: u32 = u16::MAX as u32;

/// Maps positions within a rectangle to two `u16` and back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionQuantizer {
    min: [f32; 2],
    step: [f32; 2],
}

/// The bounds given to a quantizer are not a proper rectangle.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "quantizer bounds must be finite with min < max on both axes; got min {min:?}, max {max:?}"
)]
pub struct BoundsError {
    /// Minimum corner given.
    pub min: [f32; 2],
    /// Maximum corner given.
    pub max: [f32; 2],
}

impl PositionQuantizer {
    /// A quantizer for the rectangle `min`..`max`.
    pub fn new(min: [f32; 2], max: [f32; 2]) -> Result<Self, BoundsError> {
        let ok =
            min.iter().chain(&max).all(|v| v.is_finite()) && min[0] < max[0] && min[1] < max[1];
        if !ok {
            return Err(BoundsError { min, max });
        }
        let steps = POSITION_STEPS as f32;
        Ok(Self {
            min,
            step: [(max[0] - min[0]) / steps, (max[1] - min[1]) / steps],
        })
    }

    /// Size of one step on each axis; the round-trip error is at most half of it.
    pub fn step(&self) -> [f32; 2] {
        self.step
    }

    /// Position to fixed point, clamped to the bounds. NaN maps to the minimum.
    #[inline]
    pub fn quantize(&self, pos: [f32; 2]) -> [u16; 2] {
        [0, 1].map(|axis| {
            let q = ((pos[axis] - self.min[axis]) / self.step[axis]).round();
            // `as` saturates and maps NaN to 0: exactly the clamping wanted.
            q.clamp(0.0, POSITION_STEPS as f32) as u16
        })
    }

    /// Fixed point to position.
    #[inline]
    pub fn dequantize(&self, q: [u16; 2]) -> [f32; 2] {
        [0, 1].map(|axis| self.min[axis] + f32::from(q[axis]) * self.step[axis])
    }
}

/// Angle in radians (any value) to one byte: 256 steps over a full turn.
#[inline]
pub fn angle_to_byte(radians: f32) -> u8 {
    if !radians.is_finite() {
        return 0;
    }
    let turns = radians.rem_euclid(TAU) / TAU;
    // 0..=256 after rounding; 256 is a full turn, which is 0.
    ((turns * 256.0).round() as u32 % 256) as u8
}

/// One byte to an angle in radians, in `0..2π`.
#[inline]
pub fn byte_to_angle(byte: u8) -> f32 {
    f32::from(byte) * (TAU / 256.0)
}

/// Smallest absolute difference between two angles, radians.
pub fn angle_distance(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(TAU);
    d.min(TAU - d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zone() -> PositionQuantizer {
        PositionQuantizer::new([-500.0, 0.0], [500.0, 2000.0]).expect("bounds")
    }

    #[test]
    fn bad_bounds_are_refused() {
        assert!(PositionQuantizer::new([0.0, 0.0], [0.0, 1.0]).is_err());
        assert!(PositionQuantizer::new([0.0, f32::NAN], [1.0, 1.0]).is_err());
    }

    #[test]
    fn every_grid_point_round_trips_exactly() {
        let q = zone();
        for x in (0..=u16::MAX).step_by(7) {
            let y = u16::MAX - x;
            assert_eq!(q.quantize(q.dequantize([x, y])), [x, y]);
        }
    }

    #[test]
    fn corners_and_outside_clamp() {
        let q = zone();
        assert_eq!(q.quantize([-500.0, 0.0]), [0, 0]);
        assert_eq!(q.quantize([500.0, 2000.0]), [u16::MAX, u16::MAX]);
        assert_eq!(q.quantize([-1e9, 1e9]), [0, u16::MAX]);
        assert_eq!(q.quantize([f32::NAN, f32::INFINITY]), [0, u16::MAX]);
    }

    #[test]
    fn angle_edges() {
        assert_eq!(angle_to_byte(0.0), 0);
        assert_eq!(angle_to_byte(TAU), 0);
        assert_eq!(angle_to_byte(-TAU / 4.0), 192);
        assert_eq!(angle_to_byte(TAU - 0.001), 0);
        assert_eq!(angle_to_byte(f32::NAN), 0);
        for b in 0..=255u8 {
            assert_eq!(angle_to_byte(byte_to_angle(b)), b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn position_round_trip_within_half_step(x in -500.0f32..=500.0, y in 0.0f32..=2000.0) {
            let q = zone();
            let back = q.dequantize(q.quantize([x, y]));
            let step = q.step();
            // Half a step, plus float rounding of the arithmetic (a few ulps of the magnitude).
            let slack = [f32::EPSILON * 4.0 * 500.0, f32::EPSILON * 4.0 * 2000.0];
            prop_assert!((back[0] - x).abs() <= step[0] / 2.0 + slack[0], "x {x} -> {}", back[0]);
            prop_assert!((back[1] - y).abs() <= step[1] / 2.0 + slack[1], "y {y} -> {}", back[1]);
        }

        #[test]
        fn angle_round_trip_within_half_step(a in -100.0f32..100.0) {
            let back = byte_to_angle(angle_to_byte(a));
            prop_assert!(angle_distance(a, back) <= TAU / 512.0 + 1e-4, "{a} -> {back}");
        }
    }
}
