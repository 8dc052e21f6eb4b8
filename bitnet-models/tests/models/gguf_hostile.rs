//! Ambiguous or hostile GGUF files: a metadata key or a tensor name given twice (llama.cpp refuses both; "last
//! one wins" would run a different model than the file seems to describe), tensors of more layers than
//! `block_count` declares, and a FIFO where a model file is expected (opening it would block forever).

use bitnet_models::gguf::{GgufFile, GgufTensorSpec, GgufValue};
use bitnet_models::{load_gguf, ModelError};
use burn::backend::Flex;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-tq2_0.gguf")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-gguf-hostile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture rewritten with its metadata and tensor table edited.
fn rewrite(
    name: &str,
    edit_meta: impl FnOnce(&mut Vec<(String, GgufValue)>),
    edit_tensors: impl FnOnce(&mut Vec<(String, usize)>),
) -> PathBuf {
    let source = GgufFile::open(&fixture()).unwrap();
    let mut meta = source.metadata().to_vec();
    edit_meta(&mut meta);
    let mut order: Vec<(String, usize)> =
        source.tensors().iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
    edit_tensors(&mut order);
    let tensors = order
        .into_iter()
        .map(|(name, i)| {
            let t = &source.tensors()[i];
            GgufTensorSpec {
                name,
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
                data: Box::new(|| Ok(source.data(t).to_vec())),
            }
        })
        .collect();
    let path = scratch(name).join("model.gguf");
    bitnet_models::gguf::write_gguf(&path, &meta, tensors).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    let err: ModelError = load_gguf::<Flex>(path, &Default::default()).unwrap_err();
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    err.to_string()
}

#[test]
fn duplicate_keys_and_tensors_are_refused() {
    // (Not general.alignment, which the writer sets itself.)
    let dup = |meta: &mut Vec<(String, GgufValue)>| {
        let entry = meta.iter().find(|(k, _)| k.ends_with(".block_count")).unwrap().clone();
        meta.push(entry);
    };
    let path = rewrite("dup-key", dup, |_| {});
    let err = load_error(&path);
    assert!(err.contains("appears twice"), "{err}");
    let path = rewrite("dup-tensor", |_| {}, |order| order.push(order[0].clone()));
    let err = load_error(&path);
    assert!(err.contains("appears twice"), "{err}");
}

#[test]
fn tensors_beyond_block_count_are_refused() {
    let path = rewrite(
        "fewer-blocks",
        |meta| {
            for (key, value) in meta.iter_mut() {
                if key.ends_with(".block_count") {
                    *value = GgufValue::U32(1);
                }
            }
        },
        |_| {},
    );
    let err = load_error(&path);
    assert!(err.contains("layer 1") && err.contains("1 layers"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = scratch("fifo");
    let fifo = dir.join("model.gguf");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(GgufFile::open(&path).map(|_| ()).map_err(|e| e.to_string()));
    });
    let result = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("opening a FIFO blocked");
    assert!(result.unwrap_err().contains("not a regular file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where the type id of tensor `t` sits in the header of `bytes` (after its name, dimension count and dims).
fn type_field(bytes: &[u8], t: &bitnet_models::gguf::GgufTensorInfo) -> usize {
    let mut needle = (t.name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(t.name.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("the name is in the header");
    at + needle.len() + 4 + 8 * t.dims.len()
}

#[test]
fn overlapping_tensor_data_is_refused() {
    let bytes = std::fs::read(fixture()).unwrap();
    let file = GgufFile::open(&fixture()).unwrap();
    let mut bad = bytes.clone();
    // The second tensor's offset (after its type id) set to the first's: two tensors on the same bytes.
    let [first, second] = [&file.tensors()[0], &file.tensors()[1]];
    let offset_of = |t| type_field(&bytes, t) + 4;
    let first_offset = bytes[offset_of(first)..offset_of(first) + 8].to_vec();
    let at = offset_of(second);
    bad[at..at + 8].copy_from_slice(&first_offset);
    let path = scratch("overlap").join("model.gguf");
    std::fs::write(&path, &bad).unwrap();
    let err = load_error(&path);
    assert!(err.contains("run past the next tensor"), "{err}");
}

/// Early PrismML files wrote group-128 blocks under upstream's Q2_0 id: such a file (the PQ2_0 fixture with
/// every type id 142 rewritten to 42) loads as PQ2_0, because only that size fits each tensor's slot, and gives
/// the fixture's logits.
#[test]
fn group_128_blocks_under_the_q2_0_id_are_read_as_pq2_0() {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-qwen3-pq2_0/model.gguf");
    let mut bytes = std::fs::read(&source).unwrap();
    let file = GgufFile::open(&source).unwrap();
    for t in file.tensors().iter().filter(|t| t.ggml_type == bitnet_models::gguf::GgmlType::PQ2_0) {
        let at = type_field(&bytes, t);
        assert_eq!(bytes[at..at + 4], 142u32.to_le_bytes());
        bytes[at..at + 4].copy_from_slice(&42u32.to_le_bytes());
    }
    let path = scratch("q2-g128").join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let relabeled = GgufFile::open(&path).unwrap();
    assert!(relabeled.tensors().iter().all(|t| t.ggml_type != bitnet_models::gguf::GgmlType::Q2_0));
    let logits = |p: &Path| {
        let model = load_gguf::<Flex>(p, &Default::default()).unwrap();
        let mut cache = model.new_cache(1, 8).unwrap();
        model.forward_ids(&[1, 2, 3], &mut cache).unwrap().into_data().to_vec::<f32>().unwrap()
    };
    assert_eq!(logits(&path), logits(&source));
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}
