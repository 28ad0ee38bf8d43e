// mc/data/datasets.hpp — the study's data sets in one include.
//
//   medmnist.hpp  MedMnist: MedMNIST .npz splits, INFO class names, stratified percentage subsets
//   vqa.hpp       VqaDataset (VQA-RAD with the image-based train/validation split, SLAKE English),
//                 AnswerVocab
//   roco.hpp      RocoDataset: ROCO captions.txt + image folder
//   common.hpp    SeededRng / permutation, ImageCheck + SkipReport (missing or corrupt images)
// Batches for training come from mc/data/loader.hpp (DataLoader) over any of them.
#pragma once
#include "mc/data/common.hpp"
#include "mc/data/medmnist.hpp"
#include "mc/data/roco.hpp"
#include "mc/data/vqa.hpp"
