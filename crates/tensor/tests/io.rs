//! safetensors I/O: formats, errors, atomic writes.

use ferrolab_tensor::{dtype, io, DType, Tensor};

/// A scratch folder, removed when the test ends.
fn dir(name: &str) -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new(&format!("io-{name}")).unwrap()
}

#[test]
fn every_dtype_round_trips_through_a_file() {
    let d = dir("dtypes");
    let vals = vec![0.0f32, 1.0, -2.5, 3.3, 100.0, -0.015625, 448.0, 1e-3];
    let t = Tensor::from_vec(vals.clone(), &[2, 4]).unwrap();
    for dt in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
    ] {
        let p = d.join(format!("{dt:?}.safetensors"));
        io::save_safetensors(&p, &[("w".into(), t.clone())], dt, None).unwrap();
        let back = io::load_safetensors(&p).unwrap();
        let w = &back["w"];
        assert_eq!(w.shape(), &[2, 4]);
        let want: Vec<f32> = vals.iter().map(|&v| dtype::round_to(v, dt)).collect();
        assert_eq!(w.to_vec(), want, "{dt:?}");
        let size = std::fs::metadata(&p).unwrap().len() as usize;
        assert!(
            size >= 8 * dt.size() && size < 8 * dt.size() + 200,
            "{dt:?}: {size} bytes"
        );
    }
    // no temporary files left behind
    let stray: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(stray.is_empty());
}

#[test]
fn malformed_files_give_errors_naming_the_file() {
    let d = dir("bad");
    let p = d.join("trunc.safetensors");
    let t = Tensor::ones(&[16]);
    io::save_safetensors(&p, &[("w".into(), t)], DType::F32, None).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
    let e = io::load_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("trunc.safetensors"), "{e}");
    std::fs::write(&p, [0xFFu8; 3]).unwrap();
    assert!(io::load_safetensors(&p).is_err());
    std::fs::write(&p, []).unwrap();
    assert!(io::load_safetensors(&p).is_err());
}

#[test]
fn atomic_write_replaces_the_whole_file() {
    let d = dir("atomic");
    let p = d.join("f.bin");
    io::write_atomic(&p, b"first version").unwrap();
    io::write_atomic(&p, b"2nd").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"2nd");
    let e = io::write_atomic(&d.join("no/such/dir/f.bin"), b"x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no/such/dir"), "{e}");
}
