//! This machine, as far as running a model on it goes: cores (those this process may use, which
//! a container or an affinity mask may cut), memory (what the kernel says is available, and a
//! cgroup's limit where one is set), CPU features, GPUs (through `nvidia-smi` where installed),
//! and memory bandwidth measured by reading a buffer larger than any cache.
//!
//! Linux first: elsewhere memory and features come back unknown and `fit` says so rather than
//! guessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What `fit` needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU's model name.
    pub cpu: String,
    /// Logical CPUs online.
    pub cores: usize,
    /// Logical CPUs this process may use (affinity mask, cgroup quota).
    pub usable_cores: usize,
    /// The SIMD features llama.cpp's CPU kernels use, those this CPU has.
    pub features: Vec<String>,
    pub memory: Memory,
    pub gpus: Vec<Gpu>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Physical memory (0 when the kernel does not say).
    pub total: u64,
    /// What can be allocated without swapping: the kernel's `MemAvailable`, or less where a
    /// cgroup's limit leaves less; `None` when the kernel does not say.
    pub available: Option<u64>,
    /// The tightest memory limit of this process's cgroups, when one is set.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub memory_total: u64,
    pub memory_free: u64,
}

/// Memory read speed with the threads a model would decode with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub bytes_per_s: f64,
    pub threads: usize,
}

/// SIMD features worth naming, as `/proc/cpuinfo` spells them.
const FEATURES: &[&str] = &[
    "sse3",
    "ssse3",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
];

impl Machine {
    /// Reads what the kernel reports; cheap (no measurement).
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| count_cpu_list(s.trim()))
            .or_else(|| {
                let n = cpuinfo
                    .lines()
                    .filter(|l| l.starts_with("processor"))
                    .count();
                (n > 0).then_some(n)
            })
            .unwrap_or(1);
        let usable_cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(cores);
        Machine {
            cpu: cpu_name(&cpuinfo),
            cores,
            usable_cores,
            features: cpu_features_in(&cpuinfo),
            memory: Memory::detect(),
            gpus: nvidia_gpus(),
        }
    }
}

impl Memory {
    pub fn detect() -> Memory {
        Memory::detect_less(0)
    }

    /// As [`detect`](Memory::detect), with `in_use` bytes of page cache that running models
    /// hold taken off the kernel's figure (it counts them as reclaimable; a cgroup's usage
    /// already includes them).
    pub fn detect_less(in_use: u64) -> Memory {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let total = meminfo_kib(&meminfo, "MemTotal")
            .unwrap_or(0)
            .saturating_mul(1024);
        let mut available = meminfo_kib(&meminfo, "MemAvailable")
            .map(|k| k.saturating_mul(1024).saturating_sub(in_use));
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let cgroup = cgroup_room(Path::new("/sys/fs/cgroup"), &own);
        if let (Some(a), Some((_, room))) = (available.as_mut(), cgroup) {
            *a = (*a).min(room);
        }
        Memory {
            total,
            available,
            limit: cgroup.map(|(l, _)| l),
        }
    }
}

fn cpu_name(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "model name" | "Model" | "cpu model").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// This CPU's SIMD features (those [`Machine::features`] names).
pub fn cpu_features() -> Vec<String> {
    cpu_features_in(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

fn cpu_features_in(cpuinfo: &str) -> Vec<String> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "flags" | "Features").then_some(v)
        })
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    FEATURES
        .iter()
        .filter(|f| flags.contains(f))
        .map(|f| f.to_string())
        .collect()
}

/// `0-3,8-11` → 8.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The tightest memory limit over this process's cgroup and its ancestors, and the room left
/// under it (the limit less what the cgroup holds that it cannot give back: its usage less the
/// file pages it could drop); `None` where no limit is set. `own` is `/proc/self/cgroup`;
/// cgroup v2 (`0::/path`) first, else v1's memory controller.
fn cgroup_room(root: &Path, own: &str) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let mut take = |found: Option<(u64, u64)>| {
        if let Some((limit, room)) = found
            && best.is_none_or(|(_, r)| room < r)
        {
            best = Some((limit, room));
        }
    };
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        // From this cgroup up to the root of the hierarchy.
        let mut dir = Some(Path::new(path.trim()));
        while let Some(d) = dir {
            let here = root.join(d.strip_prefix("/").unwrap_or(d));
            take(v2_room(&here));
            dir = d.parent();
        }
        return best;
    }
    let v1 = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    if let Some(path) = v1 {
        let mem = root.join("memory");
        take(v1_room(&mem.join(path.trim_start_matches('/'))));
        take(v1_room(&mem));
    }
    best
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(dir: &Path, key: &str) -> u64 {
    std::fs::read_to_string(dir.join("memory.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn v2_room(dir: &Path) -> Option<(u64, u64)> {
    // "max" does not parse: no limit here.
    let limit = read_u64(&dir.join("memory.max"))?;
    let used = read_u64(&dir.join("memory.current")).unwrap_or(0);
    let held = used.saturating_sub(stat_field(dir, "inactive_file"));
    Some((limit, limit.saturating_sub(held)))
}

fn v1_room(dir: &Path) -> Option<(u64, u64)> {
    let limit = read_u64(&dir.join("memory.limit_in_bytes"))?;
    // v1 writes "no limit" as a number near 2^63.
    if limit >= 1 << 60 {
        return None;
    }
    let used = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
    let held = used.saturating_sub(stat_field(dir, "total_inactive_file"));
    Some((limit, limit.saturating_sub(held)))
}

/// GPUs `nvidia-smi` reports; none when it is not installed or fails.
fn nvidia_gpus() -> Vec<Gpu> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,memory.free",
            "--format=csv,noheader,nounits",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// `NVIDIA H100 80GB HBM3, 81559, 81007` per line, memory in MiB.
fn parse_nvidia_smi(out: &str) -> Vec<Gpu> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split(',').map(str::trim);
            let name = f.next()?.to_string();
            let total: u64 = f.next()?.parse().ok()?;
            let free: u64 = f.next()?.parse().ok()?;
            Some(Gpu {
                name,
                memory_total: total << 20,
                memory_free: free << 20,
            })
        })
        .collect()
}

/// Bytes read per probe pass: well past any CPU's last-level cache.
const PROBE_BYTES: usize = 256 << 20;

/// Measures how fast `threads` threads together read memory: each sums its share of a buffer
/// larger than the caches; the best of a few passes (others on the machine only slow it down).
/// Takes about half a second and `PROBE_BYTES` of memory.
pub fn measure_bandwidth(threads: usize) -> Bandwidth {
    let threads = threads.clamp(1, 256);
    let words = PROBE_BYTES / 8;
    // Distinct values, so no page is shared with another (zero pages would be).
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut sink = 0u64;
    for _ in 0..5 {
        let start = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| s.spawn(move || sum(part)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        best = best.min(start.elapsed().as_secs_f64());
        sink = sums.iter().fold(sink, |a, &b| a.wrapping_add(b));
    }
    std::hint::black_box(sink);
    Bandwidth {
        // Whole bytes: a figure that survives a round trip through the JSON cache unchanged.
        bytes_per_s: (PROBE_BYTES as f64 / best).round(),
        threads,
    }
}

/// Four independent sums, so the loop is bound by loads rather than by one add chain.
fn sum(part: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut blocks = part.chunks_exact(4);
    for b in &mut blocks {
        for (a, v) in acc.iter_mut().zip(b) {
            *a = a.wrapping_add(*v);
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(0u64, |a, &v| a.wrapping_add(v));
    acc.iter().fold(tail, |a, &v| a.wrapping_add(v))
}

/// A GGUF file some process on this machine has mapped (a model server: this one, another
/// smallfirst, llama-server, Ollama).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedModel {
    pub path: PathBuf,
    /// The most any one process maps of it (processes share the pages).
    pub bytes: u64,
    pub pids: Vec<u32>,
}

/// GGUF files mapped by the processes whose maps this user may read. Their pages are in the
/// page cache, which the kernel counts as available, but a running model needs them: `fit`
/// takes them off what is available (except the file being fitted, whose pages it would share).
pub fn mapped_models() -> Vec<MappedModel> {
    let mut found: BTreeMap<PathBuf, MappedModel> = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        for (path, bytes) in gguf_mappings(&maps) {
            let m = found.entry(path.clone()).or_insert_with(|| MappedModel {
                path,
                bytes: 0,
                pids: Vec::new(),
            });
            m.bytes = m.bytes.max(bytes);
            m.pids.push(pid);
        }
    }
    found.into_values().collect()
}

/// Bytes mapped per `.gguf` file in one process's `maps`. A path may hold spaces; a file
/// deleted since it was mapped (` (deleted)`) is still in memory and keeps that suffix, so it
/// is never taken for the live file of the same name.
fn gguf_mappings(maps: &str) -> BTreeMap<PathBuf, u64> {
    let mut out: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for line in maps.lines() {
        // start-end perms offset dev inode path: the path is what follows the fifth field.
        let mut rest = line;
        let mut fields = Vec::with_capacity(5);
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let path = rest.trim();
        if !path.trim_end_matches(" (deleted)").ends_with(".gguf") {
            continue;
        }
        let Some((a, b)) = fields[0].split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let e = out.entry(PathBuf::from(path)).or_default();
        *e = e.saturating_add(b.saturating_sub(a));
    }
    out
}

/// This process's peak resident memory (`VmHWM`), on Linux.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    meminfo_kib(&status, "VmHWM").map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn meminfo_fields_in_bytes() {
        let m = "MemTotal:       24684096 kB\nMemFree: 1 kB\nMemAvailable:   24235316 kB\n";
        assert_eq!(meminfo_kib(m, "MemTotal"), Some(24684096));
        assert_eq!(meminfo_kib(m, "MemAvailable"), Some(24235316));
        assert_eq!(meminfo_kib(m, "Mem"), None);
    }

    #[test]
    fn features_and_name_from_cpuinfo() {
        let c = "processor : 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse3 avx avx2 fma f16c avx512f\n";
        assert_eq!(cpu_name(c), "AMD EPYC 7B13");
        assert_eq!(
            cpu_features_in(c),
            ["sse3", "avx", "avx2", "fma", "f16c", "avx512f"]
        );
    }

    #[test]
    fn nvidia_smi_lines() {
        let g = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 81007\nbad line\n");
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g[0].memory_total, 81559 << 20);
    }

    #[test]
    fn cgroup_v2_limits_up_the_tree_less_reclaimable_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let own = "0::/user.slice/app.scope\n";
        assert_eq!(cgroup_room(root.path(), own), None, "no files");
        let app = root.path().join("user.slice/app.scope");
        std::fs::create_dir_all(&app).expect("mkdir");
        std::fs::write(app.join("memory.max"), "max\n").expect("write");
        assert_eq!(cgroup_room(root.path(), own), None, "no limit");
        // The parent's limit binds: 1000 with 600 used, 150 of it droppable.
        let slice = root.path().join("user.slice");
        std::fs::write(slice.join("memory.max"), "1000\n").expect("write");
        std::fs::write(slice.join("memory.current"), "600\n").expect("write");
        std::fs::write(slice.join("memory.stat"), "anon 400\ninactive_file 150\n").expect("write");
        assert_eq!(cgroup_room(root.path(), own), Some((1000, 550)));
        // A tighter one lower down wins.
        std::fs::write(app.join("memory.max"), "500\n").expect("write");
        std::fs::write(app.join("memory.current"), "100\n").expect("write");
        assert_eq!(cgroup_room(root.path(), own), Some((500, 400)));
    }

    #[test]
    fn cgroup_v1_memory_controller() {
        let root = tempfile::tempdir().expect("tempdir");
        let own = "12:cpu,cpuacct:/x\n4:memory:/docker/abc\n";
        let dir = root.path().join("memory/docker/abc");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        assert_eq!(cgroup_room(root.path(), own), None, "v1's no limit");
        std::fs::write(dir.join("memory.limit_in_bytes"), "2000\n").expect("write");
        std::fs::write(dir.join("memory.usage_in_bytes"), "700\n").expect("write");
        std::fs::write(dir.join("memory.stat"), "total_inactive_file 200\n").expect("write");
        assert_eq!(cgroup_room(root.path(), own), Some((2000, 1500)));
    }

    #[test]
    fn gguf_mappings_from_maps() {
        let maps = "\
7f0000000000-7f0000100000 r--s 00000000 fd:01 123 /models/a.gguf
7f0000100000-7f0000180000 r--s 00100000 fd:01 123 /models/a.gguf
7f0000200000-7f0000201000 r-xp 00000000 fd:01 9 /usr/lib/libc.so.6
7f0000300000-7f0000301000 rw-p 00000000 00:00 0
7f0000400000-7f0000400800 r--s 00000000 fd:01 124 /models/b.gguf
7f0000500000-7f0000500100 r--s 00000000 fd:01 125                  /home/u/My Models/c.gguf
7f0000600000-7f0000600100 r--s 00000000 fd:01 126 /models/a.gguf (deleted)
";
        let m = gguf_mappings(maps);
        assert_eq!(m.len(), 4);
        assert_eq!(m[Path::new("/home/u/My Models/c.gguf")], 0x100);
        assert_eq!(m[Path::new("/models/a.gguf (deleted)")], 0x100);
        assert_eq!(m[Path::new("/models/a.gguf")], 0x180000);
        assert_eq!(m[Path::new("/models/b.gguf")], 0x800);
    }

    #[test]
    fn summing_is_exact() {
        let v: Vec<u64> = (0..1003).collect();
        assert_eq!(sum(&v), 1003 * 1002 / 2);
    }
}
