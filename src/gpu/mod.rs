//! The GPU runtime: device and limits, shaders and pipelines, buffers, and the kernels.
//! Native (Vulkan/Metal/DX12) and browser (WebGPU) share every line but the adapter request.

pub mod batch;
pub mod kernels;
pub mod q8_0;
pub mod shaders;
pub mod tensor;
pub mod timing;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use batch::Batch;
pub use tensor::{GpuMatrix, MatrixChunk, WeightFormat};

use crate::error::{Error, Result};

/// What the caller needs from the adapter.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Largest single storage binding the model would like (its largest tensor); the device is
    /// asked for this much, capped by the adapter. Larger matrices are split into row chunks.
    pub wanted_binding_bytes: u64,
    /// Artificial caps, to test small devices (e.g. 128 MiB bindings on a big GPU).
    pub max_binding_override: Option<u64>,
    pub max_buffer_override: Option<u64>,
    /// Prefer a software adapter (tests that must be reproducible across machines).
    pub force_fallback_adapter: bool,
    /// Ask for timestamp queries where the adapter has them (benchmarks; costs nothing
    /// until a profiler is installed).
    pub profiling: bool,
    /// How decode matvecs and attention spread their work (default: from the adapter).
    pub layout: KernelLayout,
    /// Keep to the baseline kernels even where the adapter has subgroups (tests, comparisons).
    pub no_subgroups: bool,
}

/// How the decode matvecs and attention spread work over invocations. `Lanes` splits each
/// matrix row (each attention head's keys) across invocations that combine through workgroup
/// memory: coalesced reads on GPUs. `Rows` gives each invocation a whole row (a whole head)
/// with no barriers, which CPU adapters (lavapipe, SwiftShader) run several times faster:
/// they execute a workgroup's invocations as SIMD lanes of one thread, where a barrier or a
/// workgroup costs far more than the arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelLayout {
    #[default]
    Auto,
    Lanes,
    Rows,
}

impl std::str::FromStr for KernelLayout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "lanes" => Ok(Self::Lanes),
            "rows" => Ok(Self::Rows),
            other => Err(format!("'{other}' is not auto, lanes or rows")),
        }
    }
}

impl KernelLayout {
    /// `Auto` resolved for an adapter: rows on CPU devices, lanes elsewhere.
    fn resolve(self, info: &wgpu::AdapterInfo) -> Self {
        let name = info.name.to_lowercase();
        let cpu = info.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "swiftshader", "lavapipe"]
                .iter()
                .any(|n| name.contains(n));
        match self {
            Self::Auto if cpu => Self::Rows,
            Self::Auto => Self::Lanes,
            chosen => chosen,
        }
    }
}

/// Facts about the adapter, for display and for choosing kernel variants.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_storage: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_queries: bool,
    /// The kernel layout chosen for this adapter (see `KernelLayout`).
    pub kernel_layout: KernelLayout,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub summary: AdapterSummary,
    /// Storage binding cap in effect (device limit or the test override, whichever is lower).
    pub max_binding: u64,
    /// Buffer size cap in effect.
    pub max_buffer: u64,
    pub uniform_alignment: u64,
    pub max_workgroups_per_dim: u32,
    /// Bound where a kernel's optional input (e.g. a bias) is absent.
    pub dummy: wgpu::Buffer,
    /// The kernel layout in use (never `Auto`).
    pub layout: KernelLayout,
    /// Subgroup kernels are in use (the device has the feature and it was not declined).
    pub subgroups: bool,
    /// Timestamp queries are enabled on this device (asked for with `GpuOptions::profiling`).
    pub timestamps: bool,
    /// `CommandEncoder::write_timestamp` is enabled too (timing copies outside passes).
    pub encoder_timestamps: bool,
    /// When installed, every dispatch runs in its own timed pass (see `timing`).
    profiler: RefCell<Option<timing::Profiler>>,
    /// Entry point of each pipeline built, so profiles can name kernels.
    pipeline_names: RefCell<HashMap<wgpu::ComputePipeline, &'static str>>,
    pipelines: RefCell<HashMap<shaders::PipelineKey, wgpu::ComputePipeline>>,
    modules: RefCell<HashMap<shaders::Shader, wgpu::ShaderModule>>,
    /// The first uncaptured device error, reported at the next read-back instead of a panic.
    device_error: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it is.
    lost: Arc<Mutex<Option<String>>>,
}

const DEFAULT_BINDING: u64 = 128 << 20;

impl GpuContext {
    pub async fn new(options: GpuOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: options.force_fallback_adapter,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::gpu(format!(
                    "no GPU adapter found ({e}); natively install a Vulkan driver (e.g. mesa-vulkan-drivers), in a browser enable WebGPU"
                ))
            })?;
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        let features = adapter.features();
        let mut wanted_features = wgpu::Features::empty();
        if options.profiling && features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            wanted_features |= wgpu::Features::TIMESTAMP_QUERY
                | (features & wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);
        }
        if !options.no_subgroups && features.contains(wgpu::Features::SUBGROUP) {
            wanted_features |= wgpu::Features::SUBGROUP;
        }

        let binding = options
            .wanted_binding_bytes
            .max(DEFAULT_BINDING)
            .min(adapter_limits.max_storage_buffer_binding_size);
        let mut limits = wgpu::Limits::defaults().using_resolution(adapter_limits.clone());
        limits.max_storage_buffer_binding_size = binding;
        limits.max_buffer_size = adapter_limits.max_buffer_size;
        limits.max_storage_buffers_per_shader_stage =
            adapter_limits.max_storage_buffers_per_shader_stage.min(10);
        limits.max_compute_workgroup_storage_size = adapter_limits
            .max_compute_workgroup_storage_size
            .min(32 << 10);
        let limits = clamp_to(limits, &adapter_limits);

        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("moegraft"),
                required_features: wanted_features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::gpu(format!(
                    "could not open the GPU device '{}': {e}",
                    info.name
                ))
            })?;

        let device_error = Arc::new(Mutex::new(None));
        let sink = device_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        // A lost device (driver reset, the browser reclaiming it, `destroy`) fails every later
        // call: say so, rather than the first validation error it causes.
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_sink.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });

        let max_binding = options
            .max_binding_override
            .map_or(limits.max_storage_buffer_binding_size, |o| {
                o.min(limits.max_storage_buffer_binding_size)
            });
        let max_buffer = options
            .max_buffer_override
            .map_or(limits.max_buffer_size, |o| o.min(limits.max_buffer_size));
        let summary = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            max_storage_binding: adapter_limits.max_storage_buffer_binding_size,
            max_buffer_size: adapter_limits.max_buffer_size,
            max_workgroup_storage: adapter_limits.max_compute_workgroup_storage_size,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamp_queries: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            kernel_layout: options.layout.resolve(&info),
        };
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Self {
            dummy,
            layout: summary.kernel_layout,
            subgroups: wanted_features.contains(wgpu::Features::SUBGROUP),
            timestamps: wanted_features.contains(wgpu::Features::TIMESTAMP_QUERY),
            encoder_timestamps: wanted_features
                .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
            profiler: RefCell::new(None),
            pipeline_names: RefCell::new(HashMap::new()),
            device,
            queue,
            summary,
            max_binding,
            max_buffer,
            uniform_alignment: limits.min_uniform_buffer_offset_alignment as u64,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            pipelines: RefCell::new(HashMap::new()),
            modules: RefCell::new(HashMap::new()),
            device_error,
            lost,
        })
    }

    /// Fails if the device was lost, else with the first uncaptured device error, if any.
    pub fn check_device_error(&self) -> Result<()> {
        if let Some(why) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::gpu(format!(
                "the GPU device was lost ({why}); load the model again"
            )));
        }
        let err = self.device_error.lock().ok().and_then(|mut e| e.take());
        match err {
            Some(e) => Err(Error::gpu(format!("device error: {e}"))),
            None => Ok(()),
        }
    }

    /// The most bytes one buffer bound as storage may hold here: the binding limit or the
    /// buffer limit, whichever is lower.
    pub fn buffer_limit(&self) -> u64 {
        self.max_binding.min(self.max_buffer)
    }

    /// Whether the device was lost (every later call fails).
    pub fn is_lost(&self) -> bool {
        self.lost.lock().is_ok_and(|l| l.is_some())
    }

    /// Times every later dispatch with `profiler` until it is taken back.
    pub fn install_profiler(&self, profiler: timing::Profiler) {
        *self.profiler.borrow_mut() = Some(profiler);
    }

    pub fn take_profiler(&self) -> Option<timing::Profiler> {
        self.profiler.borrow_mut().take()
    }

    /// The entry point a pipeline was built from ("?" if not built by this context).
    pub fn pipeline_name(&self, pipeline: &wgpu::ComputePipeline) -> &'static str {
        self.pipeline_names
            .borrow()
            .get(pipeline)
            .copied()
            .unwrap_or("?")
    }

    /// Splits a linear workgroup count over x and y (each ≤ the per-dimension limit).
    pub fn workgroups(&self, count: u32) -> [u32; 3] {
        let count = count.max(1);
        let x = count.min(self.max_workgroups_per_dim);
        [x, count.div_ceil(x), 1]
    }
}

/// Lowers each requested limit the adapter cannot meet (keeps device creation from failing
/// on small adapters; the kernels need only WebGPU's defaults).
fn clamp_to(mut l: wgpu::Limits, a: &wgpu::Limits) -> wgpu::Limits {
    l.max_storage_buffer_binding_size = l
        .max_storage_buffer_binding_size
        .min(a.max_storage_buffer_binding_size);
    l.max_buffer_size = l.max_buffer_size.min(a.max_buffer_size);
    l.max_compute_workgroups_per_dimension = l
        .max_compute_workgroups_per_dimension
        .min(a.max_compute_workgroups_per_dimension);
    l.max_compute_invocations_per_workgroup = l
        .max_compute_invocations_per_workgroup
        .min(a.max_compute_invocations_per_workgroup);
    l.max_compute_workgroup_size_x = l
        .max_compute_workgroup_size_x
        .min(a.max_compute_workgroup_size_x);
    l
}
