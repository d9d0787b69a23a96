//! Reading the two archive kinds the package clients write: npm's `.tgz` and Python wheels
//! (zip).

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

fn bad(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::BadArchive {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// Every regular file of a gzipped tar, as `(path, bytes)`.
pub fn tgz_entries(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut ar = tar::Archive::new(gz);
    let mut out = Vec::new();
    for entry in ar.entries().map_err(|e| bad(path, e))? {
        let mut entry = entry.map_err(|e| bad(path, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| bad(path, e))?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| bad(path, e))?;
        out.push((name, data));
    }
    Ok(out)
}

/// Every file of a zip (a wheel), as `(path, bytes)`.
pub fn zip_entries(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(path, e))?;
    let mut out = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(|e| bad(path, e))?;
        if f.is_dir() {
            continue;
        }
        let name = f.name().to_string();
        let mut data = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut data).map_err(|e| bad(path, e))?;
        out.push((name, data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tgz_round_trip_and_garbage() {
        let mut buf = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut buf, flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            let data = b"hello speech";
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "package/data/x.txt", &data[..])
                .unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        let e = tgz_entries(&buf, Path::new("x.tgz")).unwrap();
        assert_eq!(
            e,
            vec![("package/data/x.txt".into(), b"hello speech".to_vec())]
        );
        let err = tgz_entries(b"not a tarball", Path::new("y.tgz")).unwrap_err();
        assert!(err.to_string().contains("y.tgz"), "{err}");
        let err = zip_entries(b"not a zip", Path::new("z.whl")).unwrap_err();
        assert!(err.to_string().contains("z.whl"), "{err}");
    }
}
