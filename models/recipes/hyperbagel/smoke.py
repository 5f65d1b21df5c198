"""Helpers the recipe smoke tests share."""
import sys


def refused(module, args, msg):
    """MODULE's main() with ARGS must exit with one line holding MSG (no traceback): the argument and resume checks
    that exit before any work, run in this process (no interpreter start per case)."""
    import contextlib
    import importlib
    import io
    mod = importlib.import_module(module)
    err, argv = io.StringIO(), sys.argv
    sys.argv = [module.split(".")[-1] + ".py", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            mod.main()
    except SystemExit as e:
        text = err.getvalue() + (e.code if isinstance(e.code, str) else "")
        assert e.code not in (0, None) and msg in text, (module, args, text[-400:])
        return text
    finally:
        sys.argv = argv
    raise AssertionError(f"{module} {' '.join(args)}: not refused ({msg})")
