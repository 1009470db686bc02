"""The CycleINR model package: torch only, never napari or Qt.

Import the pieces from their modules (`model.cycleinr`, `model.infer`, ...): this file stays empty of imports
so that `import napari_cycleinr.model.degrade` does not pull in the training loop.
"""
