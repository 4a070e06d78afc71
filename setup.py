"""Distribution xen-remus-ext: runs on Python 2.7 (xend's interpreter) and 3."""
from setuptools import find_packages, setup

setup(
    name="xen-remus-ext",
    version="0.1.0",
    description="Remus failback, resync and re-protect for the Xen toolstack (xend/xm and xl)",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-only",
    packages=find_packages(include=["xen_remus_ext", "xen_remus_ext.*"]),
    python_requires=">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*, !=3.4.*",
    install_requires=[
        "six",
        "pyxs",
        "lxml<5; python_version < '3'",
        "lxml; python_version >= '3'",
        # xxh3 digests for checksum resync (2.x is the last line for 2.7)
        "xxhash<3; python_version < '3'",
        "xxhash; python_version >= '3'",
        # zstd compression of resync data (0.14 is the last line for 2.7)
        "zstandard<0.15; python_version < '3'",
        "zstandard; python_version >= '3'",
        # the progress bar of long runs (4.64 is the last line for 2.7)
        "tqdm<4.65; python_version < '3'",
        "tqdm; python_version >= '3'",
    ],
    # the Pacemaker resource agent: /usr/lib/ocf/resource.d/xen-remus/remus
    # when installed with prefix /usr (the .deb; under /usr/local, link it)
    data_files=[("lib/ocf/resource.d/xen-remus", ["ocf/remus"])],
    entry_points={"console_scripts": ["xen-remus = xen_remus_ext.cli.main:run",
                                      "xm-remus = xen_remus_ext.xm.entry:run"]},
    classifiers=[
        "Programming Language :: Python :: 2.7",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Clustering",
        "Operating System :: POSIX :: Linux",
    ],
)
