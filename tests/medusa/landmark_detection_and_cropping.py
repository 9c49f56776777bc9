"""Medusa's tutorial "Landmark detection and cropping", its code cells verbatim.

From SchynsLab/medusa v0.0.6, docs/tutorials/landmark_detection_and_cropping.ipynb
(BSD-3-Clause, (c) the Medusa authors). Nothing is changed here: the test that runs it
(tests/test_medusa_tutorial.py) replaces ``medusa`` with ``facecrop`` in the import lines,
and nothing else, as a Medusa user switching would.
"""
# flake8: noqa

# %% cell 1
from medusa.data import get_example_image
from medusa.detect import SCRFDetector
from torchvision.utils import draw_keypoints, save_image
from IPython.display import Image, Video

detector = SCRFDetector()
img = get_example_image()
out = detector(img)

draw = draw_keypoints(img[0].byte(), out['lms'], colors=(255, 0, 0), radius=5)
save_image(draw / 255., 'lms5.png')
Image('lms5.png')

# %% cell 2
from medusa.landmark import RetinafaceLandmarkModel

lm_model = RetinafaceLandmarkModel('2d106det')
out_106 = lm_model(img)

print(out_106.keys())

# %% cell 3
tuple(out_106['lms'].shape)  # (batch, n_landmarks, XY)

# %% cell 4
draw = draw_keypoints(img[0].byte(), out_106['lms'], colors=(255, 0, 0), radius=3)
save_image(draw / 255., 'lms106.png')
Image('lms106.png')

# %% cell 5
lm_model = RetinafaceLandmarkModel('1k3d68')
out_68 = lm_model(img)

draw = draw_keypoints(draw, out_68['lms'], colors=(0, 255, 0), radius=3)
save_image(draw / 255., 'lms106+68.png')
Image('lms106+68.png')

# %% cell 6
from medusa.data import get_example_video
from medusa.containers import BatchResults

lm_model = RetinafaceLandmarkModel('2d106det')
vid = get_example_video(return_videoloader=True, batch_size=256)
batch = next(iter(vid)).to(lm_model.device)
out = lm_model(batch)

results = BatchResults(**out)
results.visualize('./lms.mp4', imgs=batch, video=True)

Video('./lms.mp4', embed=True)

# %% cell 7
from medusa.crop import BboxCropModel

# 224 x 224 is the expected cropped image size for the DECA/EMOCA models
crop_model = BboxCropModel(lms_model_name='1k3d68', output_size=(224, 224))
out_crop = crop_model(img)

print(out_crop.keys())

# %% cell 8
from torchvision.utils import draw_bounding_boxes
from medusa.detect import SCRFDetector

det_model = SCRFDetector()
out_det = det_model(img)

draw = draw_bounding_boxes(img[0].byte(), out_det['bbox'], colors=(255, 0, 0), width=3)
draw = draw_bounding_boxes(draw, out_crop['bbox'], colors=(0, 255, 0), width=3)
save_image(draw / 255., 'bbox_compare.png')
Image('bbox_compare.png')

# %% cell 9
# N (detections) x 3 (RGB) x H x W
out_crop['imgs_crop'].shape

# %% cell 10
save_image(out_crop['imgs_crop'] / 255., 'crop.png')
Image('crop.png')

# %% cell 11
crop_mat = out_crop['crop_mat']
tuple(crop_mat.shape)  # N (detections) x 3 x 3

# %% cell 12
from kornia.geometry.transform import warp_affine

# warp_affine expects a N x 2 x 3 matrix, so we remove the last row
img_crop = warp_affine(img, out_crop['crop_mat'][:, :2, :], dsize=(224, 224))
save_image(img_crop / 255., 'crop_manual.png')
Image('crop_manual.png')

# %% cell 13
import torch

inv_crop_mat = torch.inverse(out_crop['crop_mat'])
img_uncrop = warp_affine(img_crop, inv_crop_mat[:, :2, :], dsize=(img.shape[2], img.shape[3]))

save_image(img_uncrop, 'uncrop.png', normalize=True)
Image('uncrop.png')

# %% cell 14
from kornia.geometry.linalg import transform_points
lms_cropped = transform_points(crop_mat, out_crop['lms'])

draw = draw_keypoints(img_crop[0].byte(), lms_cropped, colors=(255, 0, 0), radius=3)
save_image(draw / 255., 'lms_crop.png')
Image('lms_crop.png')

# %% cell 15
from medusa.crop.align_crop import TEMPLATE
print(TEMPLATE)

# %% cell 16
background = torch.zeros((3, 112, 112)).byte()
draw = draw_keypoints(background, TEMPLATE.unsqueeze(0), colors=(255, 0, 0), radius=3)
save_image(draw / 255., 'lm_template.png')
Image('lm_template.png')

# %% cell 17
from medusa.crop import AlignCropModel

crop_model = AlignCropModel(output_size=(224, 224))
out_crop = crop_model(img)

out_crop.keys()

# %% cell 18
draw = draw_keypoints(out_crop['imgs_crop'][0].byte(), TEMPLATE.unsqueeze(0) * 2, colors=(255, 0, 0), radius=2)

# Note that the aligned landmarks are (by default) in original image space, so 
lms = transform_points(out_crop['crop_mat'], out_crop['lms'])
draw = draw_keypoints(draw, lms, colors=(0, 255, 0), radius=2)
save_image(draw / 255., 'lm_aligned.png')
Image('lm_aligned.png')

# %% cell 19
vid = get_example_video(return_videoloader=True, batch_size=512)
batch = next(iter(vid)).to(lm_model.device)
out = crop_model(batch)

results = BatchResults(**out)
results.sort_faces()
results.visualize('./align_crop.mp4', imgs=batch, video=True, show_cropped=True, crop_size=(224, 224), template=TEMPLATE * 2)

Video('./align_crop.mp4', embed=True)
