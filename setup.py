from setuptools import find_packages, setup

setup(
    name="ssl-dynamics",
    version="0.1.0",
    description=(
        "Per-example learning dynamics of SimCLR, supervised and random-label training: "
        "train every seed with a checkpoint per epoch, then inspect r_t offline."
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["ssl_dynamics", "ssl_dynamics.*"]),
    install_requires=[
        "torch>=2.2,<2.15",
        "torchvision>=0.17,<0.30",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "h5py>=3.8",
        "zarr>=3.1",  # 3.0 lacks create_array(data=...); 3.1.6 is tested
        "matplotlib>=3.7",
        "click>=8.1",
        "timm>=0.9",
        "safetensors>=0.4",
        "tqdm>=4.64",
        "openTSNE>=1.0",
        "threadpoolctl>=3.1",
        # labelled views of the stored arrays and the portable exports
        "xarray>=2024.1",
        "pandas>=2.0",
        "pyarrow>=14",
        "h5netcdf>=1.3",
        "submitit>=1.5",  # cluster jobs (train submit, inspect submit); SLURM or local
    ],
    extras_require={"dev": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "train=ssl_dynamics.train.cli:main",
            "inspect=ssl_dynamics.inspect.cli:main",
        ]
    },
)
