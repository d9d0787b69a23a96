//! What a stop request removes: the temporary files of writes in progress (a process of its
//! own, since `remove_temporaries` removes every one the process has).

use std::io::Write;

#[test]
fn a_stop_request_removes_the_temporaries_of_writes_in_progress() {
    let d = ferrolab_data::TempFolder::new("temporaries").unwrap();
    let dest = d.join("vectors.txt");
    std::fs::write(&dest, b"old").unwrap();
    let mut open = ferrolab_data::AtomicFile::create(&dest).unwrap();
    open.write_all(b"half of the new").unwrap();
    open.flush().unwrap();
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let during = names();
    assert_eq!(during.len(), 2, "{during:?}");
    assert!(during.iter().any(|n| ferrolab_data::is_temp_name(n)));
    // a scratch folder in use (a data set being fetched) goes too
    let held = ferrolab_data::TempFolder::new("temporaries-held").unwrap();
    let scratch = held.join(".scratch");
    std::fs::create_dir_all(scratch.join("download")).unwrap();
    let _tracked = ferrolab_data::ScratchDir::track(&scratch);
    ferrolab_data::remove_temporaries();
    assert!(!scratch.exists());
    assert_eq!(names(), ["vectors.txt"]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    // the write cannot be committed any more, and no new one starts; the destination keeps
    // what it held
    assert!(open.commit().is_err());
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    let e = ferrolab_data::write_atomic(&dest, b"new").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
    assert_eq!(names(), ["vectors.txt"]);
}
