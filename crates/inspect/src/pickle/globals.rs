//! What a pickle may import: the denylist of callables that run code or reach the system
//! (always critical), and the list of what checkpoints and common ML objects need (known
//! safe). Anything on neither list is never clean: it is reported as unknown, naming it.

/// Globals that run code, reach the system or the network, or load more code. A name ending
/// in `.*` matches the whole module and its submodules.
pub(super) const DENY: &[&str] = &[
    // Processes, the system, the file system.
    "os.*",
    "posix.*",
    "nt.*",
    "posixpath.*",
    "ntpath.*",
    "subprocess.*",
    "_posixsubprocess.*",
    "_winapi.*",
    "sys.*",
    "shutil.*",
    "socket.*",
    "_socket.*",
    "pty.*",
    "signal.*",
    "tempfile.*",
    "pathlib.*",
    "io.*",
    "_io.*",
    "fcntl.*",
    "resource.*",
    "platform.popen",
    "_osx_support.*",
    "uuid._get_command_stdout",
    "glob.*",
    "zipfile.*",
    "tarfile.*",
    "shelve.*",
    "dbm.*",
    "mmap.*",
    // Running or importing code.
    "runpy.*",
    "importlib.*",
    "imp.*",
    "pkgutil.*",
    "zipimport.*",
    "code.*",
    "codeop.*",
    "compileall.*",
    "py_compile.*",
    "timeit.*",
    "cProfile.*",
    "profile.*",
    "pstats.*",
    "trace.*",
    "pdb.*",
    "bdb.*",
    "idlelib.*",
    "lib2to3.*",
    "pydoc.*",
    "doctest.*",
    "unittest.*",
    "test.*",
    "ctypes.*",
    "_ctypes.*",
    "cffi.*",
    "marshal.*",
    "pickle.*",
    "_pickle.*",
    "cPickle.*",
    "dill.*",
    "cloudpickle.*",
    "joblib.*",
    "commands.*",
    "builtins.eval",
    "builtins.exec",
    "builtins.compile",
    "builtins.open",
    "builtins.__import__",
    "builtins.getattr",
    "builtins.setattr",
    "builtins.delattr",
    "builtins.globals",
    "builtins.locals",
    "builtins.vars",
    "builtins.input",
    "builtins.breakpoint",
    "builtins.memoryview",
    "builtins.execfile",
    "builtins.file",
    "builtins.reload",
    "builtins.help",
    "types.*",
    "operator.attrgetter",
    "operator.methodcaller",
    "operator.itemgetter",
    "_operator.*",
    "functools.*",
    "inspect.*",
    "gc.*",
    "weakref.*",
    "ast.*",
    "threading.*",
    "thread.*",
    "_thread.*",
    "multiprocessing.*",
    "concurrent.*",
    "asyncio.*",
    "venv.*",
    "ensurepip.*",
    "pip.*",
    "setuptools.*",
    "distutils.*",
    "site.*",
    "sysconfig.*",
    "builtins.exit",
    "builtins.quit",
    // The network and the browser.
    "webbrowser.*",
    "requests.*",
    "urllib.*",
    "urllib2.*",
    "urllib3.*",
    "httplib.*",
    "http.*",
    "ftplib.*",
    "telnetlib.*",
    "smtplib.*",
    "poplib.*",
    "imaplib.*",
    "nntplib.*",
    "xmlrpc.*",
    "socketserver.*",
    // Loaders that run nested pickles or code of their own.
    "torch.load",
    "torch.serialization.*",
    "torch.hub.*",
    "torch.jit.*",
    "torch._C._jit_*",
    "torch._inductor.*",
    "torch._dynamo.*",
    "torch.utils.cpp_extension.*",
    "torch.package.*",
    "numpy.load",
    "numpy.lib.npyio.*",
    "numpy.testing.*",
    "numpy.distutils.*",
    "numpy.f2py.*",
    "pandas.read_pickle",
    "pandas.io.*",
    "keras.*",
    "tensorflow.*",
];

/// What model checkpoints and the objects ML code commonly pickles (PyTorch tensors and
/// modules, NumPy arrays, scikit-learn estimators, collections) import. Instantiating one of
/// these with arguments runs no code of the file's choosing.
pub(super) const ALLOW: &[&str] = &[
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "collections.Counter",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.object",
    "builtins.tuple",
    "builtins.list",
    "builtins.dict",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.range",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "fractions.Fraction",
    "_codecs.encode",
    "copyreg._reconstructor",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Size",
    "torch.device",
    "torch.dtype",
    "torch.float32",
    "torch.float16",
    "torch.bfloat16",
    "torch.float64",
    "torch.int64",
    "torch.int32",
    "torch.int8",
    "torch.uint8",
    "torch.bool",
    "torch.*Storage",
    "torch.storage._load_from_bytes",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.nn.modules.*",
    "torch.nn.parameter.Parameter",
    "torch.nn.parameter.Buffer",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.*",
    "numpy.ma.core._mareconstruct",
    "numpy.ma.core.MaskedArray",
    "numpy.random._pickle.*",
    "sklearn.linear_model.*",
    "sklearn.tree.*",
    "sklearn.ensemble.*",
    "sklearn.svm.*",
    "sklearn.naive_bayes.*",
    "sklearn.neighbors.*",
    "sklearn.preprocessing.*",
    "sklearn.feature_extraction.*",
    "sklearn.decomposition.*",
    "sklearn.cluster.*",
    "sklearn.pipeline.Pipeline",
    "sklearn.compose.*",
    "sklearn.impute.*",
    "sklearn.calibration.*",
    "sklearn.multiclass.*",
    "sklearn.neural_network.*",
    "sklearn.model_selection._split.*",
    "sklearn._loss.*",
];

/// Whether `module.name` matches a pattern: exact, `module.*` (module and submodules), or a
/// trailing `*` inside the last part (`torch.*Storage`, `torch._C._jit_*`).
pub(super) fn matches(pattern: &str, global: &str) -> bool {
    if let Some(module) = pattern.strip_suffix(".*") {
        return global
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with('.'));
    }
    match pattern.find('*') {
        Some(star) => {
            let (pre, post) = (&pattern[..star], &pattern[star + 1..]);
            global.len() >= pre.len() + post.len()
                && global.starts_with(pre)
                && global.ends_with(post)
                && !global[pre.len()..global.len() - post.len()].contains('.')
        }
        None => pattern == global,
    }
}

/// Whether a denylist pattern covers `name` itself as a module: `posixpath.os` is the `os`
/// module, reached as an attribute of another.
pub(super) fn denied_module(name: &str) -> Option<&'static str> {
    DENY.iter()
        .copied()
        .find(|p| p.strip_suffix(".*") == Some(name))
}

/// The names Python 3 gives Python 2 modules when it loads an old pickle (`fix_imports`).
pub(super) fn py3_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "cPickle" => "pickle",
        "copy_reg" => "copyreg",
        "thread" => "_thread",
        "urllib2" => "urllib.request",
        "httplib" => "http.client",
        "commands" => "subprocess",
        "exceptions" => "builtins",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_modules_and_names() {
        assert!(matches("os.*", "os.system"));
        assert!(matches("os.*", "os.path.join"));
        assert!(!matches("os.*", "osmodule.x"));
        assert!(matches("torch.*Storage", "torch.FloatStorage"));
        assert!(!matches("torch.*Storage", "torch.cuda.FloatStorage"));
        assert_eq!(denied_module("os"), Some("os.*"));
        assert_eq!(denied_module("OrderedDict"), None);
        // Nothing is both denied and known safe.
        for a in ALLOW {
            let probe = a.replace('*', "X");
            assert!(
                !DENY.iter().any(|d| matches(d, &probe)),
                "{a} is also denied"
            );
        }
    }
}
