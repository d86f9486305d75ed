//! WGSL sources (one file per kernel family, in `shaders/`) and the pipeline cache.
//! Variants are pipeline-overridable constants (e.g. the weight dtype), so every file is
//! plain WGSL that naga validates as is, after the `//!include` steps (shared helpers).

use super::{GpuContext, WeightFormat};
use crate::checkpoint::DType;

const WEIGHTS: &str = include_str!("../../shaders/weights.wgsl");
const ROW_DOT: &str = include_str!("../../shaders/row_dot.wgsl");
const MATMUL_IO: &str = include_str!("../../shaders/matmul_io.wgsl");
const SILU: &str = include_str!("../../shaders/silu.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    Matmul,
    /// The decode matvec on subgroups: only where the device has the feature.
    MatvecSubgroup,
    Norm,
    Rope,
    Attention,
    Activation,
    Embed,
    Moe,
    Sample,
    Graft,
    /// The read ceiling the benchmark measures.
    Bandwidth,
    /// Training: the strided matmul for forward, dX and dW.
    Gemm,
    /// Training: fused softmax + cross-entropy, loss and dlogits.
    CrossEntropy,
    /// Training: RMSNorm's input gradient.
    NormGrad,
    /// Training: SwiGLU's gradient on the fused gate/up layout.
    SwigluGrad,
    /// Training: dense routing, the combine and their gradients, the routing losses.
    MoeGrad,
    /// Training: gradient norm, clipping and AdamW.
    Adamw,
    /// Training: causal attention forward (keeping the log-sum-exp) and backward.
    AttentionGrad,
}

impl Shader {
    pub const ALL: [Shader; 18] = [
        Shader::Matmul,
        Shader::MatvecSubgroup,
        Shader::Norm,
        Shader::Rope,
        Shader::Attention,
        Shader::Activation,
        Shader::Embed,
        Shader::Moe,
        Shader::Sample,
        Shader::Graft,
        Shader::Bandwidth,
        Shader::Gemm,
        Shader::CrossEntropy,
        Shader::NormGrad,
        Shader::SwigluGrad,
        Shader::MoeGrad,
        Shader::Adamw,
        Shader::AttentionGrad,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul.wgsl",
            Shader::MatvecSubgroup => "matvec_subgroup.wgsl",
            Shader::Norm => "norm.wgsl",
            Shader::Rope => "rope.wgsl",
            Shader::Attention => "attention.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::Embed => "embed.wgsl",
            Shader::Moe => "moe.wgsl",
            Shader::Sample => "sample.wgsl",
            Shader::Graft => "graft.wgsl",
            Shader::Bandwidth => "bandwidth.wgsl",
            Shader::Gemm => "gemm.wgsl",
            Shader::CrossEntropy => "cross_entropy.wgsl",
            Shader::NormGrad => "norm_grad.wgsl",
            Shader::SwigluGrad => "swiglu_grad.wgsl",
            Shader::MoeGrad => "moe_grad.wgsl",
            Shader::Adamw => "adamw.wgsl",
            Shader::AttentionGrad => "attention_grad.wgsl",
        }
    }

    fn raw_source(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::MatvecSubgroup => include_str!("../../shaders/matvec_subgroup.wgsl"),
            Shader::Norm => include_str!("../../shaders/norm.wgsl"),
            Shader::Rope => include_str!("../../shaders/rope.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::Activation => include_str!("../../shaders/activation.wgsl"),
            Shader::Embed => include_str!("../../shaders/embed.wgsl"),
            Shader::Moe => include_str!("../../shaders/moe.wgsl"),
            Shader::Sample => include_str!("../../shaders/sample.wgsl"),
            Shader::Graft => include_str!("../../shaders/graft.wgsl"),
            Shader::Bandwidth => include_str!("../../shaders/bandwidth.wgsl"),
            Shader::Gemm => include_str!("../../shaders/gemm.wgsl"),
            Shader::CrossEntropy => include_str!("../../shaders/cross_entropy.wgsl"),
            Shader::NormGrad => include_str!("../../shaders/norm_grad.wgsl"),
            Shader::SwigluGrad => include_str!("../../shaders/swiglu_grad.wgsl"),
            Shader::MoeGrad => include_str!("../../shaders/moe_grad.wgsl"),
            Shader::Adamw => include_str!("../../shaders/adamw.wgsl"),
            Shader::AttentionGrad => include_str!("../../shaders/attention_grad.wgsl"),
        }
    }

    /// Whether the family needs the subgroups feature (the baseline families need none).
    pub fn needs_subgroups(self) -> bool {
        self == Shader::MatvecSubgroup
    }

    /// The complete WGSL of this family, shared helpers included.
    pub fn source(self) -> String {
        self.raw_source()
            .replace("//!include matmul_io", MATMUL_IO)
            .replace("//!include weights", WEIGHTS)
            .replace("//!include row_dot", ROW_DOT)
            // After matmul_io, which includes it.
            .replace("//!include silu", SILU)
    }
}

/// Pipeline-constant value for a weight dtype (see `shaders/weights.wgsl`).
pub fn weight_dtype_constant(dtype: DType) -> u32 {
    weight_format_constant(dtype.into())
}

/// `W_DTYPE` for a weight format (see `shaders/weights.wgsl`).
pub fn weight_format_constant(format: WeightFormat) -> u32 {
    match format {
        WeightFormat::Plain(DType::F32) => 0,
        WeightFormat::Plain(DType::F16) => 1,
        WeightFormat::Plain(DType::BF16) => 2,
        WeightFormat::Q8_0 => 3,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// `W_DTYPE` for families that read weights.
    pub weight_format: Option<WeightFormat>,
    /// `SWIGLU` for the decode matvecs: the fused gate/up projection.
    pub swiglu: bool,
    /// `GELU` with `swiglu`: the gate's activation is gelu_tanh (gemma), not silu.
    pub gelu: bool,
}

impl GpuContext {
    /// The compute pipeline for an entry point, compiled once per context.
    pub fn pipeline(&self, key: PipelineKey) -> wgpu::ComputePipeline {
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return p.clone();
        }
        let mut constants: Vec<(&str, f64)> = key
            .weight_format
            .map(|f| vec![("W_DTYPE", weight_format_constant(f) as f64)])
            .unwrap_or_default();
        if key.swiglu {
            constants.push(("SWIGLU", 1.0));
        }
        if key.gelu {
            constants.push(("GELU", 1.0));
        }
        let pipeline = self.create_pipeline(key.shader, key.entry, &constants);
        self.pipelines.borrow_mut().insert(key, pipeline.clone());
        pipeline
    }

    /// Compiles a pipeline with arbitrary override constants, uncached: for kernels whose
    /// variants a `PipelineKey` cannot name (e.g. graft's three input dtypes); the caller
    /// keeps what it builds.
    pub fn create_pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        let module = self.module(shader);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        // Only profiles need the names.
        if self.timestamps {
            self.pipeline_names
                .borrow_mut()
                .insert(pipeline.clone(), entry);
        }
        pipeline
    }

    fn module(&self, shader: Shader) -> wgpu::ShaderModule {
        if let Some(m) = self.modules.borrow().get(&shader) {
            return m.clone();
        }
        let mut source = shader.source();
        // The browser's WGSL compiler wants the extension enabled; naga wants no directive.
        if cfg!(target_arch = "wasm32") && shader.needs_subgroups() {
            source.insert_str(0, "enable subgroups;\n");
        }
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.file_name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        self.modules.borrow_mut().insert(shader, module.clone());
        module
    }
}
