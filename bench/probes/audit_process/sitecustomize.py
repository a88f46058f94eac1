"""PROBE ONLY (not product code; bench/audit_process.py): the audit store's appends in a
process of their own.

With AUDIT_PROC=1, the front's AuditWriter hands each batch of records to a child
process over a pipe; the child appends them to its own AuditStore on the same data
directory (same keys) and sends the ids back. The writer thread in the front only
pickles, waits (GIL released) and settles. Checkpoints are not signed in the child:
fine for a benchmark of a few minutes, not for a product.
"""
import os

if os.environ.get("AUDIT_PROC") == "1" and os.environ.get("AUDIT_PROC_CHILD") != "1":
    import importlib.abc
    import sys

    def _child(conn, settings):
        os.environ["AUDIT_PROC_CHILD"] = "1"
        from sidecar.auditing import open_store
        store = open_store(settings)
        conn.send("ready")
        while True:
            try:
                records = conn.recv()
            except EOFError:
                return
            try:
                ids = list(store.append(records))
            except Exception as err:
                ids = [OSError(5, type(err).__name__)] * len(records)
            conn.send(ids)

    def _patch(module):
        Writer = module.AuditWriter
        original_init = Writer.__init__

        def __init__(self, store, policy_of, **kw):
            import multiprocessing as mp

            from sidecar.config import Settings
            ctx = mp.get_context("spawn")
            here, there = ctx.Pipe()
            settings = Settings(policies=os.environ["PROBE_POLICIES"],
                                data_dir=os.environ["PROBE_DATA_DIR"])
            self._probe_proc = ctx.Process(target=_child, args=(there, settings), daemon=True,
                                           name="audit-probe")
            self._probe_proc.start()
            assert here.recv() == "ready"
            self._probe_conn = here
            original_init(self, store, policy_of, **kw)

        def _append(self, records):
            self._probe_conn.send(records)
            ids = self._probe_conn.recv()
            self.batches += 1
            self.committed += len(records)
            return ids

        Writer.__init__ = __init__
        Writer._append = _append

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "sidecar.auditing":
                return None
            sys.meta_path.remove(self)
            import importlib.util
            spec = importlib.util.find_spec(name)
            loader = spec.loader
            original_exec = loader.exec_module

            def exec_module(module):
                original_exec(module)
                _patch(module)
            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
