//! The extension traits for burn's CubeCL backends (`CubeBackend<R, F, I, BT>`: wgpu, cuda), and through
//! [`crate::fusion`] for the `Fusion` wrappers users get as `burn::backend::Wgpu` / `Cuda`: the ternary ops are
//! CubeCL kernels ([`kernels`]); the dense head and the cache append are burn's own ops.

pub mod kernels;

/// burn's raw CubeCL backend (without the Fusion wrapper), re-exported for users and tests.
pub use burn_cubecl::CubeBackend;
/// The CUDA runtime of CubeCL (burn does not re-export it).
#[cfg(feature = "cuda")]
pub use cubecl::cuda::CudaRuntime;
/// The wgpu runtime of CubeCL.
#[cfg(feature = "wgpu")]
pub use cubecl::wgpu::WgpuRuntime;

use crate::cache::CacheWriteBackend;
use crate::dense::DenseLinearBackend;
use crate::ops::{
    assert_input_fits, assert_no_five_trit_groups, QuantizedActivationsPrimitive, TernaryBackend,
    TernaryWeightPrimitive,
};
use bitnet_kernels::TernaryLayout;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::ir::features::Plane;
use cubecl::prelude::{CubeCount, CubeDim};
use kernels::{QUANT_CUBE_DIM, TILES_PER_CUBE, TILE_CUBE_DIM, TILE_LANES};

fn dims2<R: CubeRuntime>(t: &CubeTensor<R>, what: &str) -> [usize; 2] {
    let shape = t.shape();
    assert!(shape.num_dims() == 2, "{what}: expected a 2-D tensor, got {} dims", shape.num_dims());
    shape.dims::<2>()
}

fn groups(n: usize) -> u32 {
    n.div_ceil(TILE_CUBE_DIM as usize) as u32
}

fn tile_dim() -> CubeDim {
    CubeDim { x: TILE_CUBE_DIM, y: TILE_CUBE_DIM, z: 1 }
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> TernaryBackend for CubeBackend<R, F, I, BT> {
    /// 2 bits, the layout whose GPU speed has been measured, unless `BITNET_TERNARY_LAYOUT` asks for another
    /// ([`TernaryLayout::requested`]): the kernels read both.
    fn preferred_ternary_layout() -> TernaryLayout {
        TernaryLayout::requested().unwrap_or(TernaryLayout::Bits2)
    }

    /// The kernels read both layouts (a comptime flag of each kernel).
    fn reads_ternary_layout(_layout: TernaryLayout) -> bool {
        true
    }

    fn ternary_linear(x: CubeTensor<R>, weight: TernaryWeightPrimitive<Self>) -> CubeTensor<R> {
        Self::ternary_linear_many(x, vec![weight]).pop().expect("one weight gives one output")
    }

    fn ternary_linear_many(x: CubeTensor<R>, weights: Vec<TernaryWeightPrimitive<Self>>) -> Vec<CubeTensor<R>> {
        let [m, k] = dims2(&x, "ternary_linear input");
        for w in &weights {
            assert_input_fits("ternary_linear", m, k, w);
            assert_no_five_trit_groups("ternary_linear", w);
        }
        let float_dtype = x.dtype;
        let q = Self::quantize_activations(x);
        let props = q.codes.client.properties();
        // Plane sums need planes of exactly the 32 lanes a row tile uses.
        let use_plane = props.features.plane.contains(Plane::Ops)
            && props.hardware.plane_size_min == TILE_LANES
            && props.hardware.plane_size_max == TILE_LANES;
        weights
            .into_iter()
            .map(|weight| {
                let words = into_contiguous(weight.words);
                let scales = into_contiguous(weight.scales);
                let n = weight.rows;
                let grouped = scales.shape()[0] > n;
                let trits5 = weight.layout == TernaryLayout::Trits5;
                let out =
                    empty_device_dtype(q.codes.client.clone(), q.codes.device.clone(), Shape::new([m, n]), float_dtype);
                let tiles = n.div_ceil(4) as u32;
                let dtypes = [float_dtype.into(), words.dtype.into()];
                let count = CubeCount::Static(tiles.div_ceil(TILES_PER_CUBE), m as u32, 1);
                let dim = CubeDim { x: TILE_LANES, y: TILES_PER_CUBE, z: 1 };
                let (codes, act_scales) = (q.codes.clone().into_tensor_arg(), q.scales.clone().into_tensor_arg());
                let (words, scales, y) =
                    (words.into_tensor_arg(), scales.into_tensor_arg(), out.clone().into_tensor_arg());
                if grouped {
                    kernels::ternary_matmul_grouped_kernel::launch::<R>(
                        &out.client,
                        count,
                        dim,
                        codes,
                        act_scales,
                        words,
                        scales,
                        y,
                        use_plane,
                        dtypes,
                    );
                } else {
                    kernels::ternary_matmul_kernel::launch::<R>(
                        &out.client,
                        count,
                        dim,
                        codes,
                        act_scales,
                        words,
                        scales,
                        y,
                        use_plane,
                        trits5,
                        dtypes,
                    );
                }
                out
            })
            .collect()
    }

    fn quantize_activations(x: CubeTensor<R>) -> QuantizedActivationsPrimitive<Self> {
        let [m, k] = dims2(&x, "quantize_activations input");
        let x = into_contiguous(x);
        let int_dtype = I::dtype();
        let codes = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::new([m, k]), int_dtype);
        let scales = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::new([m]), x.dtype);
        let dtypes = [x.dtype.into(), int_dtype.into()];
        kernels::quantize_activations_kernel::launch::<R>(
            &codes.client,
            CubeCount::Static(m as u32, 1, 1),
            CubeDim { x: QUANT_CUBE_DIM, y: 1, z: 1 },
            x.into_tensor_arg(),
            codes.clone().into_tensor_arg(),
            scales.clone().into_tensor_arg(),
            dtypes,
        );
        QuantizedActivationsPrimitive { codes, scales }
    }

    fn ternary_dequantize(weight: TernaryWeightPrimitive<Self>) -> CubeTensor<R> {
        assert_no_five_trit_groups("ternary_dequantize", &weight);
        let (n, k) = (weight.rows, weight.cols);
        let trits5 = weight.layout == TernaryLayout::Trits5;
        let words = into_contiguous(weight.words);
        let scales = into_contiguous(weight.scales);
        let grouped = scales.shape()[0] > n;
        let out = empty_device_dtype(scales.client.clone(), scales.device.clone(), Shape::new([n, k]), scales.dtype);
        let dtypes = [scales.dtype.into(), words.dtype.into()];
        kernels::ternary_dequantize_kernel::launch::<R>(
            &out.client,
            CubeCount::Static(groups(k), groups(n), 1),
            tile_dim(),
            words.into_tensor_arg(),
            scales.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            grouped,
            trits5,
            dtypes,
        );
        out
    }
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> DenseLinearBackend for CubeBackend<R, F, I, BT> {}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> CacheWriteBackend for CubeBackend<R, F, I, BT> {}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> crate::transformer::TransformerBackend
    for CubeBackend<R, F, I, BT>
{
}
