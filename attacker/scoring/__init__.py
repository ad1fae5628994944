"""Where ground truth enters: the scorer reads the run's evaluation-only log and the dataset, after the attack
and never feeding it; metrics (PSNR, SSIM, recognised, identified, label-only baseline) and the gallery."""
