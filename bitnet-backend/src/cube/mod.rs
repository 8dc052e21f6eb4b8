//! [`TernaryBackend`] for burn's CubeCL backends (`CubeBackend<R, F, I, BT>`: wgpu, cuda), and through
//! [`crate::fusion`] for the `Fusion` wrappers users get as `burn::backend::Wgpu` / `Cuda`.

pub mod kernels;

/// burn's raw CubeCL backend (without the Fusion wrapper), re-exported for users and tests.
pub use burn_cubecl::CubeBackend;
/// The CUDA runtime of CubeCL (burn does not re-export it).
#[cfg(feature = "cuda")]
pub use cubecl::cuda::CudaRuntime;
/// The wgpu runtime of CubeCL.
#[cfg(feature = "wgpu")]
pub use cubecl::wgpu::WgpuRuntime;

use crate::ops::{assert_input_fits, QuantizedActivationsPrimitive, TernaryBackend, TernaryWeightPrimitive};
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim};
use kernels::{QUANT_CUBE_DIM, TILE_CUBE_DIM};

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
    fn ternary_linear(x: CubeTensor<R>, weight: TernaryWeightPrimitive<Self>) -> CubeTensor<R> {
        let [m, k] = dims2(&x, "ternary_linear input");
        assert_input_fits("ternary_linear", m, k, &weight);
        let float_dtype = x.dtype;
        let q = Self::quantize_activations(x);
        let words = into_contiguous(weight.words);
        let scales = into_contiguous(weight.scales);
        let n = weight.rows;
        let out = empty_device_dtype(q.codes.client.clone(), q.codes.device.clone(), Shape::new([m, n]), float_dtype);
        let dtypes = [float_dtype.into(), words.dtype.into()];
        kernels::ternary_matmul_kernel::launch::<R>(
            &out.client,
            CubeCount::Static(groups(n), groups(m), 1),
            tile_dim(),
            q.codes.into_tensor_arg(),
            q.scales.into_tensor_arg(),
            words.into_tensor_arg(),
            scales.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dtypes,
        );
        out
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
        let (n, k) = (weight.rows, weight.cols);
        let words = into_contiguous(weight.words);
        let scales = into_contiguous(weight.scales);
        let out = empty_device_dtype(scales.client.clone(), scales.device.clone(), Shape::new([n, k]), scales.dtype);
        let dtypes = [scales.dtype.into(), words.dtype.into()];
        kernels::ternary_dequantize_kernel::launch::<R>(
            &out.client,
            CubeCount::Static(groups(k), groups(n), 1),
            tile_dim(),
            words.into_tensor_arg(),
            scales.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dtypes,
        );
        out
    }
}
