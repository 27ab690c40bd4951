"""maskclip_ros: open-vocabulary panoptic segmentation (MaskCLIP) for ROS 2.

The generated ROS interfaces (``maskclip_ros.msg``, ``maskclip_ros.srv``) may live in another
``maskclip_ros`` directory than this source tree (an editable install beside interfaces built into the
environment's prefix); ``extend_path`` joins every such directory into this one package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
