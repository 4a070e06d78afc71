from xen_remus_ext.cli.main import run

run()
