//! A module's gradients (and weights) as one flat f32 vector in the module's parameter order, the order every
//! rank shares (parameter ids are random per process and cannot give it).

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

/// Replaces each of `module`'s gradients by its mean over the ranks (nothing outside a run).
///
/// A failed exchange means a rank died or the network broke: training cannot go on. burn-train's step has no
/// error channel, so the gradients stay taken out (this step updates nothing), the failure is recorded and the
/// training loop is stopped (see [`super::failure`]); later calls do nothing.
pub(crate) fn all_reduce_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &mut GradientsParams) {
    if !super::joined() {
        return;
    }
    let mut flatten = Flatten::<B> { grads, values: Vec::new(), shapes: Vec::new(), device: None };
    module.visit(&mut flatten);
    let Flatten { grads, mut values, shapes, device, .. } = flatten;
    if super::failure().is_some() {
        return;
    }
    if let Err(e) = super::mean_over_ranks(&mut values) {
        super::fail(e.to_string());
        return;
    }
    let Some(device) = device else { return };
    let mut restore = Restore::<B> { grads, values: &values, offset: 0, shapes: shapes.into_iter(), device };
    module.visit(&mut restore);
}

/// Takes the gradients out of `grads` into `values`; `shapes` records, per visited parameter, the gradient's
/// shape or `None` where it has none.
struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    values: Vec<f32>,
    shapes: Vec<Option<Vec<usize>>>,
    device: Option<burn::tensor::Device<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            self.shapes.push(None);
            return;
        };
        self.device.get_or_insert_with(|| grad.device());
        self.shapes.push(Some(grad.dims().to_vec()));
        let data = grad.into_data().convert::<f32>();
        match data.as_slice::<f32>() {
            Ok(values) => self.values.extend_from_slice(values),
            Err(e) => panic!("data-parallel training: reading a gradient: {e:?}"),
        }
    }
}

/// Puts the gradients back from `values`, in the order [`Flatten`] took them.
struct Restore<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    values: &'a [f32],
    offset: usize,
    shapes: std::vec::IntoIter<Option<Vec<usize>>>,
    device: burn::tensor::Device<B::InnerBackend>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Restore<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(Some(shape)) = self.shapes.next() else { return };
        let n: usize = shape.iter().product();
        let values = self.values[self.offset..self.offset + n].to_vec();
        self.offset += n;
        let grad = Tensor::<B::InnerBackend, D>::from_data(TensorData::new(values, shape), &self.device);
        self.grads.register::<B::InnerBackend, D>(param.id, grad);
    }
}

/// A digest of `module`'s weights (their f32 bits in parameter order): ranks that start from different weights
/// do not train one model.
pub(crate) fn weights_digest<B: Backend, M: Module<B>>(module: &M) -> u64 {
    let mut digest = Digest(0);
    module.visit(&mut digest);
    digest.0
}

/// Folds each parameter's checksum (its dims, then its values' bits) into one.
struct Digest(u64);

impl<B: Backend> ModuleVisitor<B> for Digest {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let mut bytes: Vec<u8> = tensor.dims().iter().flat_map(|d| (*d as u64).to_le_bytes()).collect();
        let data = tensor.into_data().convert::<f32>();
        match data.as_slice::<f32>() {
            Ok(values) => bytes.extend(values.iter().flat_map(|v| v.to_bits().to_le_bytes())),
            Err(e) => panic!("data-parallel training: reading a weight: {e:?}"),
        }
        self.0 = (self.0 ^ crate::checkpoint::checksum(&bytes)).wrapping_mul(0x0000_0100_0000_01b3);
    }
}
