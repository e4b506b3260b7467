"""Image and video files: reading, writing and the video pipeline (OpenCV decode, encoders).

Named ``media`` because ``io`` would shadow the standard library module.
"""
