"""Media input/output: images, video (OpenCV and ffmpeg), segments."""
