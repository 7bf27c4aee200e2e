"""DuSSS pretraining losses: Dual Contrastive Learning (DCL) and Semantic Similarity Supervision (SSS).

Pan, Qiao, Lou, Ji, Li, "Dual Semantic Similarity-Supervised Vision-Language Model for Semi-Supervised Medical
Image Segmentation" (DuSSS), Sec. "Dual contrastive learning" and "Semantic similarity supervision". Each term
is one function; :func:`dcl_loss` composes them.

**SSS as done here (the release does not).** The release computes the Gaussian 2-Wasserstein similarity but
feeds plain cosine InfoNCE with one-hot targets into its default objective, so SSS is off there. Here the
similarity *forms the targets* of every contrastive matrix: with each sentence a diagonal Gaussian
N(mu, diag(sigma^2)) (from the momentum text encoder, detached),

    W2^2(i, j) = ||mu_i - mu_j||^2 + ||sigma_i - sigma_j||^2                     (:func:`w2_squared`)
    k_ij = exp( -W2^2(i, j) / (tau_s (1 + s_i^2 + s_j^2)) )                     (:func:`w2_similarity`)
    q = (1 - alpha) S + alpha K,  rows normalised                               (:func:`sss_targets`)

with s_i^2 the mean of sigma_i^2 and S the row-normalised "same sentence" indicator: identical Gaussians
(W2 = 0) get the largest similarity, a sentence shared by several images of a batch makes all of them
targets with equal weight (one text may match several images), and the larger the spread of the Gaussians,
the softer the targets (the paper's "uncertainty softens the supervision"). The S part (alpha = 0.5) keeps
the targets from being uniform while the encoders are still random (all W2 near 0), which would otherwise
teach every similarity to be equal. The logits stay cosine / T (T = 0.07); the loss is the cross-entropy
with q. With ``sss=False`` the targets are one-hot (plain InfoNCE: a duplicate sentence in a batch is a
negative).

The spreads sigma are trained by their own term (:func:`gaussian_contrastive`): InfoNCE whose logits are
-W2^2 between image and text Gaussians (online encoders), so sigma grows where an image-text match is
ambiguous.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_infonce(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of row-softmax(``logits``) with row-stochastic ``targets`` (one-hot identity when None):
    InfoNCE (van den Oord et al. 2018) with soft targets."""
    if targets is None:
        return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def symmetric_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07,
                      targets: torch.Tensor | None = None) -> torch.Tensor:
    """DuSSS Eq. (DCL, cross-modal): 0.5 [InfoNCE(a -> b) + InfoNCE(b -> a)] of L2-normalised embeddings,
    logits = a b^T / T; the b -> a direction uses the transposed targets (re-normalised per row)."""
    logits = a @ b.t() / temperature
    tt = None
    if targets is not None:
        tt = targets.t() / targets.t().sum(1, keepdim=True).clamp_min(1e-12)
    return 0.5 * (soft_infonce(logits, targets) + soft_infonce(logits.t(), tt))


def w2_squared(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """DuSSS SSS: squared 2-Wasserstein distance of diagonal Gaussians, pairwise (N,M):
    ||mu1 - mu2||^2 + ||sigma1 - sigma2||^2 (exact for commuting covariances)."""
    return torch.cdist(mu1, mu2).pow(2) + torch.cdist(sigma1, sigma2).pow(2)


def w2_similarity(mu1, sigma1, mu2, sigma2, tau: float = 0.1) -> torch.Tensor:
    """Similarity exp(-W2^2 / (tau (1 + s1^2 + s2^2))) in (0, 1]; 1 exactly for identical Gaussians. s^2 =
    mean sigma^2: a wider pair of Gaussians is judged more leniently (softer targets)."""
    s = sigma1.pow(2).mean(1)[:, None] + sigma2.pow(2).mean(1)[None, :]
    return torch.exp(-w2_squared(mu1, sigma1, mu2, sigma2) / (tau * (1 + s)))


def sss_targets(mu: torch.Tensor, sigma: torch.Tensor, tau: float = 0.1, same: torch.Tensor | None = None,
                alpha: float = 0.5) -> torch.Tensor:
    """DuSSS SSS: row-stochastic targets (1 - alpha) S + alpha K (module docstring), K = :func:`w2_similarity`
    of sentence i and j, row-normalised (detached), S = ``same`` (bool (B,B): sentence i == sentence j; the
    identity when None), row-normalised. Same sentence -> same target weight as the diagonal."""
    sim = w2_similarity(mu.detach(), sigma.detach(), mu.detach(), sigma.detach(), tau)
    k = sim / sim.sum(1, keepdim=True)
    if alpha >= 1:
        return k
    s = torch.eye(len(mu), device=mu.device) if same is None else same.float()
    s = s / s.sum(1, keepdim=True)
    return (1 - alpha) * s + alpha * k


def image_text_loss(img_g, txt_g_m, txt_g, img_g_m, temperature=0.07, targets=None) -> torch.Tensor:
    """DCL cross-modal terms: image -> text against momentum texts and text -> image against momentum images
    (each symmetric), ALBEF / DuSSS style."""
    return 0.5 * (symmetric_infonce(img_g, txt_g_m, temperature, targets)
                  + symmetric_infonce(txt_g, img_g_m, temperature, targets))


def image_image_loss(img_g, img_g_other_view, temperature=0.07, targets=None) -> torch.Tensor:
    """DCL intra-modal term, images: view 1 vs view 2 of the same images, symmetric InfoNCE (:func:`dcl_loss`
    passes both views through the online encoder)."""
    return symmetric_infonce(img_g, img_g_other_view, temperature, targets)


def text_text_loss(txt_g, txt_g_m_other, temperature=0.07, targets=None) -> torch.Tensor:
    """DCL intra-modal term, texts: one sentence of an image (online) vs another sentence of the same image
    (momentum encoder), symmetric InfoNCE."""
    return symmetric_infonce(txt_g, txt_g_m_other, temperature, targets)


def global_local_loss(local: torch.Tensor, txt_g: torch.Tensor, temperature: float = 0.07,
                      local_temperature: float = 0.1, targets=None) -> torch.Tensor:
    """DCL global-to-local term: each text j attends over the patches of image i
    (a_ijp = softmax_p(<t_j, v_ip> / T_l)), the attended local feature v_ij = sum_p a_ijp v_ip is scored
    against t_j (cosine / T), and the (B,B) matrix goes through symmetric InfoNCE. This is what makes the
    local map text-aligned, so a phrase's activation map (cosine to every patch) is meaningful."""
    v = local.flatten(2)                                        # (B, D, P)
    att = torch.softmax(torch.einsum("jd,idp->ijp", txt_g, v) / local_temperature, dim=-1)
    pooled = F.normalize(torch.einsum("ijp,idp->ijd", att, v), dim=-1)
    logits = torch.einsum("ijd,jd->ij", pooled, txt_g) / temperature
    tt = None
    if targets is not None:
        tt = targets.t() / targets.t().sum(1, keepdim=True).clamp_min(1e-12)
    return 0.5 * (soft_infonce(logits, targets) + soft_infonce(logits.t(), tt))


def gaussian_contrastive(img_mu, img_sigma, txt_mu, txt_sigma, tau: float = 0.1) -> torch.Tensor:
    """Trains the Gaussian spreads: symmetric InfoNCE with logits -W2^2(image i, text j) / (tau (1 + s^2)),
    i.e. log :func:`w2_similarity` (online encoders)."""
    logits = torch.log(w2_similarity(img_mu, img_sigma, txt_mu, txt_sigma, tau).clamp_min(1e-30))
    return 0.5 * (soft_infonce(logits) + soft_infonce(logits.t()))


def grounding_loss(local: torch.Tensor, lesion_g: torch.Tensor, background_g: torch.Tensor, mask: torch.Tensor,
                   temperature: float = 0.07) -> torch.Tensor:
    """Dense phrase grounding on **labeled train** images (an addition to DuSSS, whose image-report pairs carry
    per-image findings; BUSI's texts say little more than the class, so nothing else tells the local features
    where a lesion phrase applies). Each lesion phrase k (K,D) competes with the background phrase (D,) at
    every patch of ``local`` (B,D,h,w, L2-normalised): z_kp = (<t_k, v_p> - <t_bg, v_p>) / T, and
    BCE(z_kp, m_p) with m the mask (B,1,H,W) area-averaged to the patch grid, averaged over phrases and patches.
    This is what makes :meth:`busnb.vlm.model.VLM.activation` (cosine to the lesion phrases) a lesion map."""
    m = F.adaptive_avg_pool2d(mask.float(), local.shape[-2:])          # (B,1,h,w) fraction of lesion per patch
    z = (torch.einsum("bdhw,kd->bkhw", local, lesion_g)
         - torch.einsum("bdhw,d->bhw", local, background_g)[:, None]) / temperature
    return F.binary_cross_entropy_with_logits(z, m.expand_as(z))


def same_sentence(ids: torch.Tensor) -> torch.Tensor:
    """(B,B) bool: token ids of row i and j identical."""
    return (ids[:, None, :] == ids[None, :, :]).all(-1)


def dcl_loss(vlm, view1, view2, ids1, mask1, ids2, mask2, dcl: bool = True, sss: bool = True,
             sss_tau: float = 0.1, global_local: bool = True, sss_alpha: float = 0.5) -> tuple[torch.Tensor, dict]:
    """One pretraining step's loss. Online encoders see view 1 and sentence 1, momentum encoders view 2 and
    sentence 2 of the same images (the image-image term: view 2 also online). ``dcl``: the dual (intra-modal)
    terms image-image and text-text beside
    the cross-modal image-text / text-image terms; off: the cross-modal terms only (CLIP-style).
    ``global_local`` (kept on in every ablation: the activation maps need text-aligned local features).
    ``sss``: SSS targets from the momentum text Gaussians of sentence 2, plus :func:`gaussian_contrastive`;
    off: one-hot targets."""
    T = vlm.T
    im = vlm.encode_image(view1)
    tx = vlm.encode_text(ids1, mask1)
    im2 = vlm.encode_image(view2) if dcl else None
    with torch.no_grad():
        im_m = vlm.encode_image(view2, momentum=True)
        tx_m = vlm.encode_text(ids2, mask2, momentum=True)
    q = sss_targets(tx_m["g"], tx_m["sigma"], sss_tau, same_sentence(ids2), sss_alpha) if sss else None
    terms = {"it": image_text_loss(im["g"], tx_m["g"], tx["g"], im_m["g"], T, q)}
    if dcl:
        # the image matrix is supervised by the images' own Gaussians: view i's positive is the other view of
        # the same image (S = identity); sharing a sentence does not make two images the same image. Both views
        # go through the online encoder (SimCLR-style): against the momentum encoder alone, whose keys of a
        # from-scratch ResNet are nearly identical for every image (cosine 0.995 at init) and move slowly at
        # m = 0.995 over the few hundred steps of a small pool, the term learned too slowly to stop the
        # cross-modal terms' near-uniform targets from collapsing every embedding (all losses at ln B).
        q_ii = sss_targets(im_m["g"], im_m["sigma"], sss_tau, None, sss_alpha) if sss else None
        terms["ii"] = image_image_loss(im["g"], im2["g"], T, q_ii)
        terms["tt"] = text_text_loss(tx["g"], tx_m["g"], T, q)
    if global_local:
        terms["gl"] = global_local_loss(im["local"], tx["g"], T, targets=q)
    if sss:
        terms["gauss"] = gaussian_contrastive(im["g"], im["sigma"], tx["g"], tx["sigma"], sss_tau)
    total = sum(terms.values())
    logs = {k: v.detach() for k, v in terms.items()}
    if q is not None:
        logs["target_entropy"] = -(q * q.clamp_min(1e-12).log()).sum(1).mean().detach()
    return total, logs
