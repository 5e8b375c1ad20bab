// Installs torch 2.13.0, the pin in requirements.txt (TorchAO 0.18 needs torch >= 2.11), built for
// this machine, into the venv `args.venv` (run from `args.path`). install.js and update.js call it
// BEFORE `uv pip install -r requirements.txt`, which then keeps this build: `torch==2.13.0` is
// satisfied by 2.13.0+cu130, +cu128, +rocm7.2 and +cpu alike, so nothing is downloaded twice.
//
// The first step reads the NVIDIA driver's major version (0 when unknown). Then exactly one branch
// runs: every branch has a `when` that excludes the others and ends with `next: null`.
const venv = "{{args && args.venv ? args.venv : 'env'}}"
const dir = "{{args && args.path ? args.path : '.'}}"
const INTEL_MAC = "QTinker cannot run on an Intel Mac: it needs PyTorch 2.11 or newer (it installs torch 2.13.0 " +
  "for TorchAO 0.18), and PyTorch stopped publishing Intel-Mac builds after 2.2. Nothing was installed. " +
  "Use a Mac with Apple silicon (M1 or later), or a Windows or Linux PC."

module.exports = {
  run: [
    {
      // Newer Pinokio exposes `gpu_driver`; Pinokio 5.x has the driver version of each NVIDIA
      // controller in `graphics` (from nvidia-smi). CUDA 13 (cu130) needs driver >= 580.
      method: "local.set",
      params: {
        nvidia_driver: "{{parseInt(typeof gpu_driver !== 'undefined' && gpu_driver ? gpu_driver : Math.max(0, ...((typeof graphics !== 'undefined' && graphics && graphics.controllers) || []).filter((c) => /nvidia/i.test(c.vendor || '')).map((c) => parseInt(c.driverVersion) || 0))) || 0}}"
      }
    },
    // NVIDIA (Windows, Linux), driver >= 580: CUDA 13.0 build
    {
      when: "{{(platform === 'win32' || platform === 'linux') && gpu === 'nvidia' && local.nvidia_driver >= 580}}",
      method: "shell.run",
      params: {
        venv, path: dir,
        message: "uv pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
      },
      next: null
    },
    // NVIDIA (Windows, Linux), older or unknown driver: CUDA 12.8 build (driver >= 525 on Linux, 528 on Windows)
    {
      when: "{{(platform === 'win32' || platform === 'linux') && gpu === 'nvidia' && !(local.nvidia_driver >= 580)}}",
      method: "shell.run",
      params: {
        venv, path: dir,
        message: "uv pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
      },
      next: null
    },
    // AMD on Linux: ROCm build
    {
      when: "{{platform === 'linux' && gpu === 'amd'}}",
      method: "shell.run",
      params: {
        venv, path: dir,
        message: "uv pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/rocm7.2"
      },
      next: null
    },
    // Apple silicon: the PyPI wheel (Metal / MPS)
    {
      when: "{{platform === 'darwin' && arch === 'arm64'}}",
      method: "shell.run",
      params: {
        venv, path: dir,
        message: "uv pip install torch==2.13.0"
      },
      next: null
    },
    // Intel Mac: no torch >= 2.3 exists for it, so say so instead of installing something that fails
    {
      when: "{{platform === 'darwin' && arch !== 'arm64'}}",
      method: "notify",
      params: { html: INTEL_MAC },
      next: null
    },
    // Everything else (no GPU, Intel/AMD graphics on Windows, other GPUs): the CPU build
    {
      when: "{{platform !== 'darwin' && !(gpu === 'nvidia' && (platform === 'win32' || platform === 'linux')) && !(gpu === 'amd' && platform === 'linux')}}",
      method: "shell.run",
      params: {
        venv, path: dir,
        message: "uv pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
      },
      next: null
    }
  ]
}
