"""Build hook for the native SKINNY-64/192 bulk cipher (crypto_backend.protocol._skinny)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "crypto_backend.protocol._skinny",
            sources=["crypto_backend/protocol/_skinny.c"],
            extra_compile_args=["-O3", "-std=c99"],
        )
    ]
)
