//! The CPU engine's shapes as the device kernels take them, and back: `ringsam-kernels` mirrors
//! them field for field because it sits below this crate.

use ringsam_kernels::conv::ConvShape;
use ringsam_kernels::pool::PoolShape as DevicePool;

use crate::conv::Conv2dShape;
use crate::pool::PoolShape;

impl From<Conv2dShape> for ConvShape {
    fn from(s: Conv2dShape) -> ConvShape {
        let Conv2dShape { n, c, h, w, k, r, s, stride, pad_h, pad_w, p, q, groups } = s;
        ConvShape { n, c, h, w, k, r, s, stride, pad_h, pad_w, p, q, groups }
    }
}

impl From<&ConvShape> for Conv2dShape {
    fn from(s: &ConvShape) -> Conv2dShape {
        let ConvShape { n, c, h, w, k, r, s, stride, pad_h, pad_w, p, q, groups } = *s;
        Conv2dShape { n, c, h, w, k, r, s, stride, pad_h, pad_w, p, q, groups }
    }
}

impl From<PoolShape> for DevicePool {
    fn from(s: PoolShape) -> DevicePool {
        let PoolShape { planes, h, w, r, s, stride, pad_h, pad_w, p, q } = s;
        DevicePool { planes, h, w, r, s, stride, pad_h, pad_w, p, q }
    }
}

impl From<&DevicePool> for PoolShape {
    fn from(s: &DevicePool) -> PoolShape {
        let DevicePool { planes, h, w, r, s, stride, pad_h, pad_w, p, q } = *s;
        PoolShape { planes, h, w, r, s, stride, pad_h, pad_w, p, q }
    }
}
