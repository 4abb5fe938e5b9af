"""The lazy public API resolves every advertised name, and `import cai` stays light."""

import subprocess
import sys

import cai


def test_every_export_resolves():
    for name in cai.__all__:
        assert getattr(cai, name) is not None, name


def test_import_and_help_do_not_load_torch():
    code = "import sys, cai, cai.cli; cai.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
